"""Simulated quickstart runs through the report at this machine's measured speed noise: error rates, coverage, power.

Each run is the quickstart design (4 levels, 2 arms, 2 temperatures, 24 prompts x 1 iteration) timed as the runner
times it now: 3 sessions per cell spread over the sweep, 2 counterbalanced rounds per session (ABBA), a speed A/A
pseudo-arm in the first pruned cell. Its values are drawn with the quality noise of a real quickstart run and the
speed noise measured on this machine by benchmarks/timing_noise.py (``MACHINE_NOISE`` in synthetic.py: session
offsets, session x arm offsets, slow drift over the sweep's timing order, heavy-tailed repeats). Every run is written
as records into its own folder and reported through ``reporting.cli.report_main`` exactly as
``pruning-agency report <run> --no-plots --no-wandb --quiet`` would; the tests read the ``statistics.json`` it
wrote. Every run is seeded, so the counts are the same on every machine.

What is held (contract 14):

* A/A (no true difference between the arms, ``AA_REPORTS`` reports, the default reading): at most 5% of reports
  show any significant primary effect after the report's one Holm adjustment; each speed test and each quality
  test on its own (unadjusted p < 0.05) keeps its 5% (``SPEED_TESTS``, ``QUALITY_TESTS`` say which are counted).
* A known effect (tokens/s x0.9 and log reference perplexity +20% at every pruned level, ``EFFECT_RUNS`` runs):
  the 95% intervals of the speed and the quality effect cover the true value in 93-97% of runs; the quality effect
  is detected in at least 80% of runs, the speed effect's power is printed (this loaded machine's noise is too
  large for 6 sessions to resolve 10%).
* At the quiet quickstart run's speed noise (same layout), effects growing with the level are detected as slopes
  in at least 80% of runs (``GROWING_RUNS``); the speed effect per level, over 3 timing passes, is printed.
* Why sessions: the old layout's repeats, read as units, invent speed effects (a cheap check without reports).

The 20% log-perplexity effect is read as written: the agency arm's log reference perplexity is 20% higher than the
baseline's at each pruned level (with the quickstart's cell means, log ratios of 0.77 to 1.7 nats). The weaker
reading, x1.2 on perplexity itself (a log ratio of 0.182), is not detectable with 24 prompts and the between-arm
noise measured on a real run; its power is printed by ``test_power_for_a_20_percent_perplexity_ratio_is_printed``.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats
from synthetic import (
    ARM_DIFFERENCE_SD,
    MACHINE_NOISE,
    MACHINE_TPS_SESSION_ARM_RATIO_SD,
    MACHINE_TPS_WITHIN_RATIO_SD,
    MACHINE_TPS_WITHIN_SD,
    QUICKSTART,
    QUICKSTART_LOG_PPL,
    TPS_PAIRED_RATIO_SD,
    WITHIN_CELL_SD,
    Noise,
    _log_ppl_mean,
    at_pruned_levels,
    build_records,
    growing,
    write_run,
)

from reporting.cli import report_main
from reporting.design import BASELINE, Arm, build_design
from reporting.estimators import mean_t_effect
from reporting.units import session_log_ratios, timing_log_ratios

AA_REPORTS = 160
EFFECT_RUNS = 80
GROWING_RUNS = 40
REQUIRED_SHARE = 0.8  # power: detected in at least 80% of runs
SWEPT = {"model.pruning.level", "model.agency.enabled", "model.generation.temperature"}
# The effect runs read perplexity uncensored: with the default threshold nearly every 70% sample of both arms is
# degenerate text, a tie at the worst outcome, so no perplexity effect can show there (test_questions.py pins it).
UNCENSORED = ("--degenerate-ppl", "1e12")
QUESTIONS = ("Q1", "Q2", "Q3", "Q4", "Q5")
PRUNED = (30.0, 50.0, 70.0)
PPL, SPEED = "reference_perplexity", "tokens_per_second"
SPEED_METRICS = {SPEED, "first_token_latency_s", "generation_time_s"}
# Counted as tests (role primary or secondary, unadjusted p): every tokens/s test (primary endpoint, Q1 slope and
# step into pruning, Q2 per level, Q4, the speed A/A) and every quality test (reference perplexity: primary
# endpoint, Q1 slope and step, Q2 and Q3 per level, Q4, Q5; Q5's diversity metrics). Left out: Q3-damage,
# pruning's damage at one temperature against the next, whose true value is not 0 here (the quickstart's curves
# differ by temperature), so it is no A/A test; the quality A/A at 0%, where both arms write the same text (it
# cannot differ); and corpus perplexity, whose windows the generator centres on the condition's corpus perplexity,
# which has no arm noise, so the arms' window means agree by construction (uninformative here, not a kept 5%).
NOT_COUNTED = {"Q3-damage", "aa", "corpus"}
# The quickstart as the runner times it (configs/quickstart.yaml: 3 sessions of 2 rounds), at this machine's noise.
# The head maps are not drawn (--no-plots): a small model shape keeps the records, and reading them, small.
MACHINE = replace(QUICKSTART, sessions=3, repeats=2, noise=MACHINE_NOISE, speed_aa=True, layers=4, heads=6)
# The layout before sessions (one session per cell, 5 repeats), for the generator's own check of the real run.
GRID = replace(QUICKSTART, layers=4, heads=6)


def log_perplexity_effect(share: float, growing_to: float | None = None):
    """A multiplicative perplexity effect that raises log perplexity by ``share`` of the cell's own value (the mean
    over the temperatures), at every pruned level, or growing linearly from none at 0% to ``share`` at
    ``growing_to``."""

    def factor(level: float) -> float:
        if level <= 0:
            return 1.0
        scale = share * (level / growing_to if growing_to else 1.0)
        mean_log = sum(_log_ppl_mean(t, level) for t in QUICKSTART_LOG_PPL) / len(QUICKSTART_LOG_PPL)
        return math.exp(scale * mean_log)

    return factor


SPEED_EFFECT = 0.9
CONSTANT = MACHINE.with_effects(ppl=log_perplexity_effect(0.2), speed=at_pruned_levels(SPEED_EFFECT))
# The same layout at the quiet quickstart run's speed noise (Noise's defaults, 50 times smaller than this loaded
# machine's): where a 10% speed effect is within reach, the report must find it.
QUIET = replace(MACHINE, noise=Noise())
GROWING = QUIET.with_effects(
    ppl=log_perplexity_effect(0.2, growing_to=70.0), speed=growing(SPEED_EFFECT, top=70.0)
)
RATIO = MACHINE.with_effects(ppl=at_pruned_levels(1.2), speed=at_pruned_levels(SPEED_EFFECT))


def _compact(statistics: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "family": c["family"],
            "role": c["role"],
            "metric": c["metric"],
            "level": c["level"],
            "temperature": c["temperature"],
            "p": c["effect"]["p"],
            "p_holm": c["p_holm"],
            "estimate": c["effect"]["estimate"],
            "ci": (c["effect"]["ci_low"], c["effect"]["ci_high"]),
            "n": c["effect"]["n"],
        }
        for c in statistics["comparisons"]
        if c["role"] in ("primary", "secondary")
    ]


def _simulate(root: Path, grid, runs: int, options: tuple[str, ...] = ()) -> list[list[dict[str, Any]]]:
    """Every run's primary and secondary comparisons, from the statistics.json ``report`` wrote."""
    result = []
    for seed in range(runs):
        run_dir = root / f"run{seed:03d}"
        write_run(run_dir, grid, seed=seed)
        report_main([str(run_dir), "--no-plots", "--no-wandb", "--quiet", *options])
        result.append(
            _compact(json.loads((run_dir / "report" / "statistics.json").read_text(encoding="utf-8")))
        )
    return result


@pytest.fixture(scope="module")
def aa_runs(tmp_path_factory: pytest.TempPathFactory) -> list[list[dict[str, Any]]]:
    return _simulate(tmp_path_factory.mktemp("aa"), MACHINE, AA_REPORTS)


@pytest.fixture(scope="module")
def constant_runs(tmp_path_factory: pytest.TempPathFactory) -> list[list[dict[str, Any]]]:
    return _simulate(tmp_path_factory.mktemp("constant"), CONSTANT, EFFECT_RUNS, UNCENSORED)


@pytest.fixture(scope="module")
def growing_runs(tmp_path_factory: pytest.TempPathFactory) -> list[list[dict[str, Any]]]:
    return _simulate(tmp_path_factory.mktemp("growing"), GROWING, GROWING_RUNS, UNCENSORED)


def _significant(c: dict[str, Any]) -> bool:
    return c["p_holm"] is not None and c["p_holm"] < 0.05


def _row(comparisons: list[dict[str, Any]], family: str, metric: str, level: float | None) -> dict[str, Any]:
    (row,) = [
        c for c in comparisons if c["family"] == family and c["metric"] == metric and c["level"] == level
    ]
    return row


def _detections(
    runs: list[list[dict[str, Any]]], family: str, metric: str, level: float | None, sign: int
) -> int:
    """Runs in which that comparison is significant in the true effect's direction (sign of the log ratio)."""
    count = 0
    for comparisons in runs:
        row = _row(comparisons, family, metric, level)
        count += _significant(row) and sign * row["estimate"] > 0
    return count


def _required(runs: list[Any]) -> int:
    return math.ceil(REQUIRED_SHARE * len(runs))


def _show(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f"\n{text}")


def _test_name(c: dict[str, Any]) -> str:
    where = "" if c["level"] is None else f" {c['level']:g}%"
    where += "" if c["temperature"] is None else f" T={c['temperature']:g}"
    return f"{c['family']} {c['metric']}{where}"


def _false_positives(runs: list[list[dict[str, Any]]], speed: bool) -> dict[str, list[bool]]:
    """Per counted test (see ``NOT_COUNTED``): unadjusted p < 0.05 in each A/A report where it was tested."""
    result: dict[str, list[bool]] = defaultdict(list)
    for comparisons in runs:
        for c in comparisons:
            if c["family"] in NOT_COUNTED or (c["metric"] in SPEED_METRICS) != speed or c["p"] is None:
                continue
            if c["metric"] in SPEED_METRICS and c["metric"] != SPEED:
                continue
            result[_test_name(c)].append(c["p"] < 0.05)
    return dict(result)


def allowed_count(n: int, rate: float = 0.05, level: float = 0.05) -> int:
    """The most positives of ``n`` trials still consistent with a true rate of ``rate``: a larger count happens with
    probability below ``level`` (one-sided binomial), so a kept 5% passes and an inflated rate does not."""
    return int(stats.binom.ppf(1 - level, n, rate))


def test_allowed_count_separates_a_kept_5_percent_from_an_inflated_one() -> None:
    assert allowed_count(160) == 13  # 8.1%: P(more | 5%) < 0.05
    assert stats.binom.sf(allowed_count(160), 160, 0.05) < 0.05
    assert stats.binom.cdf(allowed_count(160), 160, 0.13) < 0.05  # a 13% rate fails 95% of the time


def test_the_generator_reproduces_the_measured_noise() -> None:
    """The layout before sessions (one per cell): the spreads are the ones measured on the real quickstart run."""
    arm_diffs, within, ratios = [], [], []
    for seed in range(6):
        records = build_records(GRID, seed=1000 + seed)
        by_cell = {
            (
                r.config["model"]["generation"]["temperature"],
                r.config["model"]["pruning"]["level"],
                r.config["model"]["agency"]["enabled"],
            ): r
            for r in records
        }
        for (temperature, level, enabled), record in by_cell.items():
            if level == 0 or enabled:
                continue
            other = by_cell[(temperature, level, True)]
            base = np.log([s.metrics[PPL] for s in record.samples])
            agency = np.log([s.metrics[PPL] for s in other.samples])
            arm_diffs.append(np.var(agency - base, ddof=1))
            within.append(np.var(base, ddof=1))
            b = {r.repeat: r.metrics[SPEED] for r in record.timing.repeats}
            ratios.append(
                np.var([math.log(r.metrics[SPEED] / b[r.repeat]) for r in other.timing.repeats], ddof=1)
            )
    assert math.sqrt(np.mean(arm_diffs)) == pytest.approx(ARM_DIFFERENCE_SD, rel=0.1)
    assert math.sqrt(np.mean(within)) == pytest.approx(WITHIN_CELL_SD, rel=0.1)
    assert math.sqrt(np.mean(ratios)) == pytest.approx(TPS_PAIRED_RATIO_SD, rel=0.2)


def _session_array(baseline, agency) -> np.ndarray:
    """log tokens/s of one cell as (sessions, arms, rounds), sessions in the order the records list them."""
    arrays = []
    for record in (baseline, agency):
        by_session: dict[str, dict[int, float]] = defaultdict(dict)
        for r in record.timing.repeats:
            by_session[r.session][r.repeat] = math.log(r.metrics[SPEED])
        arrays.append([[rounds[k] for k in sorted(rounds)] for _, rounds in sorted(by_session.items())])
    return np.transpose(np.array(arrays), (1, 0, 2))


def test_the_sessions_generator_times_like_the_runner_at_this_machines_noise() -> None:
    """Three sessions per cell, each arm at each position equally often within a session, sessions shared by the
    arms of a cell only; pooled over cells and runs, the within-session, within-session ratio and session x arm
    spreads are the ones benchmarks/timing_noise.py measured (the same estimators, pooled)."""
    grid = replace(MACHINE, speed_aa=False, layers=2, heads=3)
    within, within_ratio, session_ratio = [], [], []
    seen: set[str] = set()
    for seed in range(20):
        records = build_records(grid, seed=2000 + seed)
        by_cell: dict[tuple[float, float], dict[bool, Any]] = defaultdict(dict)
        for r in records:
            key = (r.config["model"]["generation"]["temperature"], r.config["model"]["pruning"]["level"])
            by_cell[key][r.config["model"]["agency"]["enabled"]] = r
        for arms in by_cell.values():
            base, agency = arms[False], arms[True]
            sessions = {r.session for r in base.timing.repeats}
            assert len(sessions) == 3 and sessions == {r.session for r in agency.timing.repeats}
            assert not sessions & seen  # no session is shared with another cell
            seen |= sessions
            for session in sessions:
                positions = [r.position for r in base.timing.repeats if r.session == session]
                assert sorted(positions) == [0, 1]  # ABBA: each position once per two rounds
            values = _session_array(base, agency)
            residuals = values - values.mean(axis=2, keepdims=True)
            within.append(float((residuals**2).sum() / (values.size / 2)))
            ratios = values[:, 1] - values[:, 0]
            within_ratio.append(float(((ratios - ratios.mean(axis=1, keepdims=True)) ** 2).sum() / 3))
            session_ratio.append(float(np.var(ratios.mean(axis=1), ddof=1)))
    assert math.sqrt(np.mean(within)) == pytest.approx(MACHINE_TPS_WITHIN_SD, rel=0.15)
    assert math.sqrt(np.mean(within_ratio)) == pytest.approx(MACHINE_TPS_WITHIN_RATIO_SD, rel=0.15)
    excess = np.mean(session_ratio) - np.mean(within_ratio) / 2
    assert math.sqrt(max(excess, 0.0)) == pytest.approx(MACHINE_TPS_SESSION_ARM_RATIO_SD, rel=0.25)


def _unit_false_positives(grid, seeds: range, level: float = 30.0) -> tuple[float, float]:
    """A/A share of seeds whose speed effect at ``level`` is significant (p < 0.05) with repeats as units, and
    with sessions as units (each session's mean paired log ratio), on the same records."""
    repeats = sessions = 0
    base = Arm(BASELINE)
    for seed in seeds:
        design = build_design(build_records(grid, seed=seed), SWEPT)
        (series,) = design.series()
        arm = next(a for a in design.arms(series) if a != base)
        temperatures = design.temperatures(series)
        by_repeat = timing_log_ratios(design, series, level, temperatures, SPEED, arm, base)
        by_session = session_log_ratios(design, series, [level], temperatures, SPEED, arm, base)
        repeats += mean_t_effect(by_repeat).p < 0.05
        sessions += mean_t_effect(by_session).p < 0.05
    return repeats / len(seeds), sessions / len(seeds)


@pytest.mark.slow  # 300 simulated designs (no report written), about 20 s
def test_repeats_as_units_invent_speed_effects_that_sessions_as_units_do_not(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Why the session is the unit: the old layout (one session per cell, 5 repeats) with a session x arm SD of
    0.01 per arm makes the repeats pseudo-replicates, and a t over them finds an effect in far more than 5% of A/A
    designs; the same records read per session keep 5% (with 2 sessions, at the cost of power)."""
    old = replace(GRID, noise=Noise(tps_session_arm_sd=0.01))
    repeats, sessions = _unit_false_positives(old, range(300))
    _show(
        capsys,
        f"A/A speed at 30%, old layout, session x arm SD 0.01: repeats as units {repeats:.3f}, "
        f"sessions as units {sessions:.3f} (300 designs)",
    )
    assert repeats > 0.15 and sessions <= allowed_count(300) / 300


@pytest.mark.slow  # the whole report over many simulated sweeps
def test_without_a_true_difference_at_most_5_percent_of_reports_show_a_primary_effect(
    aa_runs: list[list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    """A report counts when any primary comparison (the primary endpoint's or any question's) is significant after
    the one Holm adjustment over all of them."""
    assert {c["family"] for c in aa_runs[0] if c["role"] == "primary"} == {"primary", *QUESTIONS}
    flagged = sum(any(_significant(c) for c in run if c["role"] == "primary") for run in aa_runs)
    _show(
        capsys,
        f"A/A at this machine's noise: {flagged}/{len(aa_runs)} reports with a significant primary effect",
    )
    assert flagged <= 0.05 * len(aa_runs)


@pytest.mark.slow  # the whole report over many simulated sweeps
@pytest.mark.parametrize("speed", [True, False], ids=["speed", "quality"])
def test_each_speed_and_quality_test_keeps_its_5_percent_in_an_a_a(
    aa_runs: list[list[dict[str, Any]]], capsys: pytest.CaptureFixture[str], speed: bool
) -> None:
    """Unadjusted p < 0.05 per test (``_false_positives`` says which are counted): pooled over the tests, no more
    positives than a true 5% gives (``allowed_count`` at 5%); each test on its own, no more than a true 5% gives
    at 5% shared over the tests (Bonferroni: one of 8 tests at exactly 5% passes its bound by chance often)."""
    tests = _false_positives(aa_runs, speed)
    pooled = [v for values in tests.values() for v in values]
    _show(
        capsys,
        f"A/A {'speed' if speed else 'quality'} false positives: {np.mean(pooled):.3f} over {len(pooled)} tests "
        f"({len(tests)} per report); per test: "
        + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in tests.items()),
    )
    assert len(tests) == (8 if speed else 16)
    assert sum(pooled) <= allowed_count(len(pooled))
    for name, values in tests.items():
        assert sum(values) <= allowed_count(len(values), level=0.05 / len(tests)), name


def _coverage(
    runs: list[list[dict[str, Any]]], metric: str, truth: dict[tuple[str, float | None], float]
) -> float:
    covered = []
    for comparisons in runs:
        for (family, level), value in truth.items():
            low, high = _row(comparisons, family, metric, level)["ci"]
            covered.append(low <= value <= high)
    return float(np.mean(covered))


@pytest.mark.slow  # the whole report over many simulated sweeps
def test_95_percent_intervals_cover_a_known_effect_in_93_to_97_percent_of_runs(
    constant_runs: list[list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    """The speed effect (log 0.9 at each pruned level and over them, 0.0 for the step from 30% to 70%) and the
    quality effect (the log perplexity ratio at each pruned level, their mean over the pruned levels)."""
    speed = {("primary", None): math.log(SPEED_EFFECT), ("Q4", 70.0): 0.0}
    speed |= {("Q2", level): math.log(SPEED_EFFECT) for level in PRUNED}
    effect = log_perplexity_effect(0.2)
    quality = {("Q2", level): math.log(effect(level)) for level in PRUNED}
    quality[("primary", None)] = float(np.mean([math.log(effect(level)) for level in PRUNED]))
    covered = {
        "speed": _coverage(constant_runs, SPEED, speed),
        "quality": _coverage(constant_runs, PPL, quality),
    }
    _show(
        capsys,
        f"coverage of 95% intervals over {len(constant_runs)} runs: speed {covered['speed']:.3f} "
        f"({len(speed)} intervals a run), quality {covered['quality']:.3f} ({len(quality)} a run)",
    )
    assert 0.93 <= covered["speed"] <= 0.97 and 0.93 <= covered["quality"] <= 0.97


@pytest.mark.slow  # the whole report over many simulated sweeps
def test_power_for_a_constant_10_percent_speed_effect_is_printed(
    constant_runs: list[list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    found = {level: _detections(constant_runs, "Q2", SPEED, level, -1) for level in PRUNED}
    primary = _detections(constant_runs, "primary", SPEED, None, -1)
    _show(
        capsys,
        f"power at this machine's noise, tokens/s x0.9 at every pruned level, Q2: {found}, primary endpoint: "
        f"{primary} of {len(constant_runs)}",
    )
    # printed, not required: at this loaded machine's noise 6 sessions cannot resolve 10% (the interval's
    # half-width is about 0.4 in log tokens/s); test_effects_growing_with_the_level_are_detected_as_slopes
    # requires the power at quiet noise. A significant one must point the right way.
    wrong = sum(_detections(constant_runs, "Q2", SPEED, level, 1) for level in PRUNED)
    assert wrong <= allowed_count(len(constant_runs) * len(PRUNED), rate=0.025)


@pytest.mark.slow  # the whole report over many simulated sweeps
def test_a_constant_20_percent_log_perplexity_effect_is_detected_at_every_pruned_level(
    constant_runs: list[list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    found = {level: _detections(constant_runs, "Q2", PPL, level, 1) for level in PRUNED}
    primary = _detections(constant_runs, "primary", PPL, None, 1)
    q5 = _detections(constant_runs, "Q5", PPL, None, 1)
    _show(
        capsys,
        f"power, log reference perplexity +20% at every pruned level, Q2: {found}, primary endpoint: {primary}, "
        f"Q5: {q5} of {len(constant_runs)}",
    )
    assert min(found.values()) >= _required(constant_runs) and primary >= _required(constant_runs)
    assert q5 >= _required(constant_runs)


@pytest.mark.slow  # the whole report over many simulated sweeps
def test_effects_growing_with_the_level_are_detected_as_slopes(
    growing_runs: list[list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    speed = _detections(growing_runs, "Q1", SPEED, None, -1)
    quality = _detections(growing_runs, "Q1", PPL, None, 1)
    speed_q2 = {level: _detections(growing_runs, "Q2", SPEED, level, -1) for level in (50.0, 70.0)}
    _show(
        capsys,
        f"power at the quiet run's speed noise, Q1 slope: tokens/s from x1 at 0% to x0.9 at 70% {speed} (Q2 at "
        f"50/70%: {speed_q2}), log reference perplexity from +0% to +20% {quality} of {len(growing_runs)}",
    )
    assert speed >= _required(growing_runs) and quality >= _required(growing_runs)
    # Per level, speed has 3 units (timing passes: a pass is shared by every cell it times, contract 17), a t test
    # with 2 degrees of freedom: x0.93 and x0.9 at 50 and 70% are found in about half the runs (printed above);
    # before, the level's 6 sessions were read as independent, which a pass-shared offset made 27% false
    # positives. The slope reads 9 (level, pass) points and keeps its power.
    assert 0 < min(speed_q2.values())


@pytest.mark.slow  # the whole report over many simulated sweeps
def test_power_for_a_20_percent_perplexity_ratio_is_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The weaker reading, x1.2 on perplexity: measured and printed, not required (about 20-25% per level with 24
    prompts after the report-wide Holm adjustment). It must still point the right way when it is found."""
    runs = _simulate(tmp_path, RATIO, 10, UNCENSORED)
    found = {level: _detections(runs, "Q2", PPL, level, 1) for level in PRUNED}
    wrong = {level: _detections(runs, "Q2", PPL, level, -1) for level in PRUNED}
    _show(capsys, f"power, reference perplexity x1.2 at every pruned level, Q2 (10 runs): {found}")
    assert sum(wrong.values()) == 0
