"""Which errors a measurement's handler may record as its failure, in strict mode and outside it."""

from __future__ import annotations

import pytest

from record.errors import STRICT_ENV, is_measurement_failure

MEASUREMENT_ERRORS = [RuntimeError("CUDA out of memory"), OSError("disk full"), ValueError("not finite")]
PROGRAMMING_ERRORS = [TypeError("x"), AttributeError("x"), NameError("x"), KeyError("x"), IndexError("x")]


@pytest.mark.parametrize("error", MEASUREMENT_ERRORS + PROGRAMMING_ERRORS, ids=repr)
def test_outside_strict_mode_every_exception_is_a_measurement_failure(error, monkeypatch) -> None:
    monkeypatch.delenv(STRICT_ENV, raising=False)
    assert is_measurement_failure(error)


@pytest.mark.parametrize("error", MEASUREMENT_ERRORS, ids=repr)
def test_strict_mode_still_records_what_a_measurement_can_run_into(error, monkeypatch) -> None:
    monkeypatch.setenv(STRICT_ENV, "1")
    assert is_measurement_failure(error)


@pytest.mark.parametrize("error", [*PROGRAMMING_ERRORS, AssertionError("x"), NotImplementedError()], ids=repr)
def test_strict_mode_reraises_a_programming_error(error, monkeypatch) -> None:
    monkeypatch.setenv(STRICT_ENV, "1")
    assert not is_measurement_failure(error)


@pytest.mark.parametrize("value", ["", "0"])
def test_empty_or_zero_is_not_strict(value, monkeypatch) -> None:
    monkeypatch.setenv(STRICT_ENV, value)
    assert is_measurement_failure(TypeError("x"))


@pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(2)], ids=repr)
def test_an_interruption_or_exit_is_never_a_measurement_failure(error, monkeypatch) -> None:
    monkeypatch.delenv(STRICT_ENV, raising=False)
    assert not is_measurement_failure(error)
