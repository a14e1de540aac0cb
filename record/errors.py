"""The two kinds of error the harness reports to a person, each with one message format.

``ConfigError``: an input that cannot run (a config value, a file, a sweep
parameter, a report option). Its message is one line: what, the value, the
problem, and what is allowed. Every check in the harness raises this type, so
the command line prints it the same way wherever it comes from and exits 2
before any expensive work starts.

``RecordError``: a result record that cannot be trusted (unreadable, damaged,
edited after it was written, or not of this schema).
"""

from __future__ import annotations

import math
import os
from typing import Any


def show(value: Any) -> str:
    """A value as a person typed it: 120 not 120.0, text quoted, None as null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float) and math.isfinite(value):
        return f"{value:g}"
    return repr(value) if isinstance(value, str) else str(value)


class ConfigError(ValueError):
    """An input that cannot run: ``<what> <value> <problem>; allowed: <allowed>`` on one line.

    ``key`` is the config key at fault when there is one (the sweep runner uses it
    to name the sweep parameter); ``what`` defaults to it.
    """

    def __init__(
        self, key: str | None, value: Any, allowed: str, problem: str = "is invalid", what: str | None = None
    ) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed
        self.problem = problem
        self.what = what or key or "input"
        shown = "" if value is _NO_VALUE else f" {show(value)}"
        super().__init__(f"{self.what}{shown} {problem}; allowed: {allowed}")

    @property
    def message(self) -> str:
        return str(self)


_NO_VALUE = object()
NO_VALUE: Any = _NO_VALUE  # for errors about a thing as a whole ("config file 'x.yaml' is not valid YAML")


def require(
    ok: bool, key: str | None, value: Any, allowed: str, problem: str = "is invalid", what: str | None = None
) -> None:
    """Raise ``ConfigError`` unless ``ok``."""
    if not ok:
        raise ConfigError(key, value, allowed, problem, what)


def is_number(value: Any) -> bool:
    """A finite int or float that is not a bool (YAML's true would otherwise pass as 1)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class RecordError(ValueError):
    """A record file that cannot be trusted; the message names the file and why."""


STRICT_ENV = "PRUNING_AGENCY_STRICT"
# Errors that say the code is wrong, not that a measurement could not be made. Outside strict mode they are
# recorded like any failed measurement (the sweep goes on); in strict mode (the test suite) they surface.
PROGRAMMING_ERRORS: tuple[type[BaseException], ...] = (
    TypeError,
    AttributeError,
    NameError,
    KeyError,
    IndexError,
    AssertionError,
    ImportError,
    NotImplementedError,
)


def strict_mode() -> bool:
    """Whether ``PRUNING_AGENCY_STRICT`` is set (to anything but empty or 0)."""
    return os.environ.get(STRICT_ENV, "") not in ("", "0")


def is_measurement_failure(error: BaseException) -> bool:
    """Whether a handler that guards a measurement may record ``error`` as that measurement's failure
    (contract 6) and go on; it must re-raise everything else: interruptions and exits always, and in
    strict mode the errors that mean a bug (``PROGRAMMING_ERRORS``)."""
    if not isinstance(error, Exception):
        return False
    return not (strict_mode() and isinstance(error, PROGRAMMING_ERRORS))
