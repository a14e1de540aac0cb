"""Command-line arguments as a person sees them: config files found by name, parse errors on one line.

Config files: ``--config configs/default.yaml`` is read relative to the current
directory when it is there; otherwise the bundled copy of the same name is used
(the configs ship with the package, so an installed ``pruning-agency`` runs from
any directory). A sweep file finds its base config relative to itself first.

Parse errors of jsonargparse (often several lines with a usage dump) become one
``ConfigError`` line that names the key, the value and what is allowed.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from pathlib import Path
from typing import Any

from record.errors import NO_VALUE, ConfigError

TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "text",
    "NoneType": "null",
    "dict": "a mapping",
    "list": "a list",
}


class InputRefused(SystemExit):
    """Carries a ``ConfigError`` out through library code that would otherwise catch and re-report it.

    A ``SystemExit`` (code 2) so that no library on the way up mistakes it for a
    failure to handle; the command line prints ``error`` and exits.
    """

    def __init__(self, error: ConfigError) -> None:
        super().__init__(2)
        self.error = error


# -- bundled configs -----------------------------------------------------------------------------------
def bundled_configs_dir() -> Path:
    """The ``configs`` folder that ships with the package (the repository's own in a checkout)."""
    spec = importlib.util.find_spec("configs")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        if (Path(location) / "default.yaml").is_file():
            return Path(location)
    return Path(__file__).resolve().parents[2] / "configs"


def find_config(path: str, relative_to: Path | None = None) -> Path | None:
    """A config file by path (as given, then relative to ``relative_to`` and its parents), or bundled by name."""
    given = Path(path).expanduser()
    if given.is_file() or given.is_absolute():
        return given if given.is_file() else None
    for base in [relative_to, *relative_to.parents] if relative_to else []:
        if (base / given).is_file():
            return base / given
    bundled = bundled_configs_dir()
    parts = given.parts[1:] if given.parts and given.parts[0] == "configs" else given.parts
    for candidate in (bundled.joinpath(*parts), bundled / "sweeps" / given.name, bundled / given.name):
        if candidate.is_file():
            return candidate
    return None


def resolve_config_args(argv: list[str], relative_to: Path | None = None) -> list[str]:
    """``--config X`` arguments pointed at a file that exists (see ``find_config``); others unchanged."""
    result = list(argv)
    for index, arg in enumerate(result):
        if arg in ("--config", "-c") and index + 1 < len(result):
            found = find_config(result[index + 1], relative_to)
            if found is not None:
                result[index + 1] = str(found)
        elif arg.startswith("--config="):
            found = find_config(arg.split("=", 1)[1], relative_to)
            if found is not None:
                result[index] = f"--config={found}"
    return result


def config_paths(argv: list[str]) -> list[str]:
    paths = []
    for index, arg in enumerate(argv):
        if arg in ("--config", "-c") and index + 1 < len(argv):
            paths.append(argv[index + 1])
        elif arg.startswith("--config="):
            paths.append(arg.split("=", 1)[1])
    return paths


def check_config_file(path: str) -> None:
    """A config file that exists must be a UTF-8 YAML mapping (a missing one is the parser's to name)."""
    import yaml

    file = Path(path)
    if not file.is_file():
        return
    allowed = "a YAML mapping of config keys (see --print_config)"
    what = f"config file '{path}'"
    try:
        content = yaml.safe_load(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ConfigError(
            "config", NO_VALUE, allowed, f"is not UTF-8 text (byte {error.start})", what
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(
            "config", NO_VALUE, allowed, f"is not valid YAML ({where}{problem})", what
        ) from None
    if content is not None and not isinstance(content, dict):
        raise ConfigError(
            "config", NO_VALUE, allowed, f"holds a {type(content).__name__}, not a mapping", what
        )


# -- parse errors as one line ------------------------------------------------------------------------
def known_keys(parser: Any) -> set[str]:
    skip = {"help", "config", "print_config"}
    return {
        a.dest
        for a in parser._actions
        if a.dest not in skip and not a.dest.endswith(".help") and a.dest != "==SUPPRESS=="
    }


def unknown_key_error(key: str, parser: Any, where: str = "") -> ConfigError:
    """``config key 'model.nope' is not known (did you mean ...?); allowed under 'model': agency, ...``."""
    keys = known_keys(parser)
    parts = key.split(".")
    prefix = ""
    for end in range(len(parts) - 1, 0, -1):
        candidate = ".".join(parts[:end])
        if any(k.startswith(candidate + ".") for k in keys):
            prefix = candidate
            break
    children = sorted(
        {
            k[len(prefix) + 1 :].split(".")[0] if prefix else k.split(".")[0]
            for k in keys
            if not prefix or k.startswith(prefix + ".")
        }
    )
    close = difflib.get_close_matches(parts[-1], children, n=1, cutoff=0.75)
    longer = sorted(
        k for k in keys if k.endswith("." + key)
    )  # --calibration.window for model.calibration.window
    if close:
        hint = f" (did you mean '{prefix + '.' if prefix else ''}{close[0]}'?)"
    else:
        hint = f" (did you mean '{longer[0]}'?)" if longer else ""
    scope = f"under '{prefix}'" if prefix else "at the top level"
    return ConfigError(
        key,
        NO_VALUE,
        f"{scope}: {', '.join(children)}",
        f"is not known{hint}",
        what=f"config key '{key}'{where}",
    )


def parse_error(message: str, parser: Any, allowed_words: dict[str, str]) -> ConfigError:
    """jsonargparse's (often multi-line) error as one ``ConfigError`` naming the value and what is allowed."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    flat = " ".join(lines)
    match = re.search(r"unrecognized arguments: (\S+)", flat)
    if match:
        key = match.group(1).lstrip("-").split("=", 1)[0]
        return unknown_key_error(key, parser, f" (given as '{match.group(1)}')")
    match = re.search(r"does not accept option '([^']+)'", flat)
    if match:
        return unknown_key_error(match.group(1), parser, " (in a config file)")
    match = re.search(r"File does not exist: '?([^']+)'?", flat)
    if match:
        return ConfigError(
            "config",
            NO_VALUE,
            "a path to a YAML config file, or the name of a bundled one",
            "does not exist",
            what=f"config file '{match.group(1)}'",
        )
    match = re.match(r'Parser key "([^"]+)":', flat)
    if match:
        key = match.group(1)
        value = next(
            (
                m.group(1)
                for line in lines
                if (
                    m := re.search(r"Got value: (.*)$", line)
                    or re.match(r"Given value: (.*)$", line)
                    or re.match(r"Unable to load config '(.*)'$", line)
                )
            ),
            None,
        )
        types = list(dict.fromkeys(re.findall(r"Expected a <class '(\w+)'>", flat)))
        literals = re.findall(r"Expected a typing.Literal\[(.*?)\]", flat)
        children = sorted(
            {k[len(key) + 1 :].split(".")[0] for k in known_keys(parser) if k.startswith(key + ".")}
        )
        allowed = (
            allowed_words.get(key)
            or (literals[0].replace("'", "") if literals else "")
            or " or ".join(TYPE_WORDS.get(t, t) for t in types)
            or (f"a mapping with keys {', '.join(children)}" if children else "see --help")
        )
        return ConfigError(key, NO_VALUE if value is None else value, allowed)
    return ConfigError(None, NO_VALUE, "see --help", flat or "is invalid", what="the arguments")
