"""The shape of the code: packages whose imports point one way, a record that needs no torch, adapters alone
knowing model types."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("cli", "lightning_modules", "callbacks", "record", "reporting")
# cli -> lightning_modules -> callbacks -> record; reporting -> record; cli also starts the report.
ALLOWED = {
    "cli": {"lightning_modules", "reporting", "record"},
    "lightning_modules": {"callbacks", "record"},
    "callbacks": {"record"},
    "reporting": {"record"},
    "record": set(),
}


def _modules(package: str) -> list[Path]:
    root = REPO / package
    return [REPO / "cli.py"] if package == "cli" else sorted(root.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Every absolute module imported anywhere in the file (inside functions and TYPE_CHECKING too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _graph(level: int) -> dict[str, set[str]]:
    """Edges between our packages (level 1) or between lightning_modules' sub-packages (level 2)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for package in PACKAGES:
        for path in _modules(package):
            relative = path.relative_to(REPO).with_suffix("").parts
            source = ".".join(relative[:level]) if package == "lightning_modules" or level == 1 else package
            for name in _imports(path):
                parts = name.split(".")
                if parts[0] not in PACKAGES:
                    continue
                target = (
                    ".".join(parts[:level]) if parts[0] == "lightning_modules" or level == 1 else parts[0]
                )
                if target != source:
                    edges[source].add(target)
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path, node, nxt]
            if nxt not in state and (found := visit(nxt, [*path, node])):
                return found
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node, [])):
            return found
    return None


def test_package_imports_point_one_way_without_cycles() -> None:
    edges = _graph(level=1)
    assert _cycle(edges) is None, _cycle(edges)
    for source, targets in edges.items():
        assert targets <= ALLOWED[source], (source, targets - ALLOWED[source])


def test_lightning_modules_sub_packages_have_no_cycle() -> None:
    edges = {k: v for k, v in _graph(level=2).items() if k.startswith("lightning_modules")}
    assert _cycle(edges) is None, _cycle(edges)


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_module_imports_one_that_imports_it_back() -> None:
    """A cycle between two modules, even one for type hints only, means one idea split across two files."""
    paths = [path for package in PACKAGES for path in _modules(package)]
    ours = {_module_name(path) for path in paths}
    edges: dict[str, set[str]] = defaultdict(set)
    for path in paths:
        source = _module_name(path)
        for name in _imports(path):
            if name in ours and name != source and not source.startswith(name + "."):  # not its own package
                edges[source].add(name)
    assert _cycle(edges) is None, _cycle(edges)


def test_record_and_report_load_without_torch() -> None:
    code = (
        "import sys; import record.schema, record.storage, record.identity, record.catalogue, record.errors; "
        "import reporting.cli, reporting.report, reporting.statistics, reporting.summary; "
        "assert 'torch' not in sys.modules and 'lightning' not in sys.modules, 'torch or lightning loaded'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_only_adapters_and_source_resolution_read_the_model_type() -> None:
    hits = []
    for package in ("lightning_modules", "callbacks"):
        for path in (REPO / package).rglob("*.py"):
            if "model_type" in path.read_text(encoding="utf-8"):
                hits.append(path.relative_to(REPO).as_posix())
    allowed = ("lightning_modules/models/adapters/", "lightning_modules/models/sources.py")
    assert hits and all(hit.startswith(allowed) for hit in hits), hits


def test_every_test_named_in_the_contracts_exists() -> None:
    """docs/contracts.md names the tests that pin each contract: a renamed or deleted test must not go unnoticed."""
    import re

    text = (REPO / "docs" / "contracts.md").read_text(encoding="utf-8")
    named: list[tuple[str, str]] = []
    path = ""
    for line in text.splitlines():
        for token in re.findall(r"`([^`]+)`", line):
            if "::" not in token:
                continue
            file_part, test = token.split("::")
            path = file_part or path  # "`::test_x`" continues the file named before it
            named.append((path, test))
    assert len(named) > 40
    missing = []
    for file_part, test in named:
        source = REPO / "tests" / file_part
        if not source.is_file() or f"def {test}(" not in source.read_text(encoding="utf-8"):
            missing.append(f"{file_part}::{test}")
    assert not missing, missing


def test_every_public_function_longer_than_ten_lines_says_why() -> None:
    """A reader meets a long public function with one line on what it is for; a new one without fails here."""
    missing = []
    for package in PACKAGES:
        for path in _modules(package):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            scopes = [tree, *(node for node in tree.body if isinstance(node, ast.ClassDef))]
            for scope in scopes:
                for node in scope.body:
                    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.name.startswith(
                        "_"
                    ):
                        continue
                    if node.end_lineno - node.lineno + 1 > 10 and ast.get_docstring(node) is None:
                        missing.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    assert missing == [], missing
