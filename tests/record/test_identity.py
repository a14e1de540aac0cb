"""A condition's identity: every result-changing setting, canonical, stable; nothing else."""

from __future__ import annotations

from record.identity import (
    NOT_RESULT_SETTINGS,
    canonical,
    condition_config,
    condition_id,
    differing_keys,
    flatten,
    identity_hash,
    is_result_setting,
    unflatten,
)


def _model(**agency) -> dict:
    return {
        "model_name": "embedded",
        "seed": 0,
        "pruning": {"level": 30, "method": "entropy_low"},
        "generation": {"temperature": 0.7},
        "agency": {"enabled": False, **agency},
    }


def _config(**agency) -> dict:
    resolved = {
        "model": _model(**agency),
        "data": {"batch_size": 8},
        "timing": {"repeats": 5},
        "trainer": {"accelerator": "cpu", "logger": {"init_args": {"project": "p"}}},
        "record": {"output_dir": "somewhere"},
    }
    return condition_config(resolved)


def test_numbers_are_canonical_so_30_and_30_0_are_one_condition() -> None:
    a = _config()
    b = _config()
    b["model"]["pruning"]["level"] = 30.0
    assert identity_hash(a) == identity_hash(b)
    assert condition_id(a) == condition_id(b)
    assert canonical({"b": 1, "a": [True, None, "x"]}) == {"a": [True, None, "x"], "b": 1.0}


def test_agency_settings_vanish_when_the_arm_is_off_and_count_when_it_is_on() -> None:
    assert _config(overload_margin=0.05) == _config(overload_margin=0.1)
    on_a, on_b = _config(enabled=True, overload_margin=0.05), _config(enabled=True, overload_margin=0.1)
    assert identity_hash(on_a) != identity_hash(on_b)
    assert condition_id(on_a) != condition_id(on_b)
    assert "_agency_" in condition_id(on_a) and "_baseline_" in condition_id(_config())
    assert "_sham_" in condition_id(_config(enabled=True, sham=True))


def test_settings_that_cannot_change_a_result_are_left_out_with_everything_below_them() -> None:
    config = flatten(_config())
    assert "record.output_dir" not in config and "trainer.logger.init_args.project" not in config
    assert config["trainer.accelerator"] == "cpu"
    assert not is_result_setting("trainer.logger.init_args.save_dir")
    assert is_result_setting("trainer.loggers_extra")  # a prefix of a name is not the name
    assert all(reason.strip() for reason in NOT_RESULT_SETTINGS.values())


def test_facts_are_merged_and_files_are_named_by_content() -> None:
    resolved = {"model": {**_model(), "calibration": {"text_file": "a.txt"}}, "data": {}}
    config = condition_config(
        resolved,
        {"model": {"calibration": {"text": "sha-a"}}},
        lambda value: {"sha256": "x"} if value == "a.txt" else value,
    )
    assert config["model"]["calibration"] == {"text_file": {"sha256": "x"}, "text": "sha-a"}
    assert unflatten(flatten(config)) == config


def test_every_part_of_the_config_changes_the_identity() -> None:
    base = _config()
    for path, value in (
        ("data.batch_size", 4),
        ("timing.repeats", 3),
        ("trainer.accelerator", "cuda"),
        ("model.seed", 1),
        ("model.generation.temperature", 1.0),
    ):
        changed = _config()
        target = changed
        *parents, leaf = path.split(".")
        for key in parents:
            target = target[key]
        target[leaf] = value
        assert identity_hash(changed) != identity_hash(base), path


def test_readable_id_names_the_condition() -> None:
    config = condition_config({"model": {**_model(), "model_name": "/some/dir/tiny-gpt2/"}})
    assert condition_id(config).startswith("tiny-gpt2_entropy_low_L30_baseline_T0.7_s0_")


def test_flatten_and_differing_keys_name_what_differs() -> None:
    a, b = _config(), _config()
    b["data"]["batch_size"] = 4
    assert flatten(a)["model.pruning.level"] == 30
    assert differing_keys([a, b]) == {"data.batch_size": [8.0, 4.0]}
    assert differing_keys([a, a]) == {}
