"""The layers of docs/architecture.md, enforced: the table there is read here, so the document
and this test cannot disagree. Every module of prism/ belongs to a unit the table names;
every import between units is one the table allows; nothing below the GraphQL layer imports
the web stack; SQL is written only where the table says."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

BASE = {"config", "errors", "observability", "tracing"}
WEB = ("strawberry", "starlette", "uvicorn")
ABOVE_DOMAIN = {"web", "cli", "bootstrap", "demo", "schema", "resolvers", "execution"}
# Where SQL may be written (a unit, or one module of a unit).
SQL_HOMES = {"models", "db", "migrations", "search", "prism/execution/planner.py"}
# What of SQLAlchemy the rest may import: the session type, its exceptions, typing.
SQL_FREE_IMPORTS = {"sqlalchemy.ext.asyncio", "sqlalchemy.exc"}
# A module of prism/ longer than this says why in its docstring (a line `Long because: ...`).
MAX_LINES = 600


def _table(repo_root: Path) -> dict[str, tuple[str, set[str] | None]]:
    """unit -> (layer, units it may import; None for every unit)."""
    text = (repo_root / "docs" / "architecture.md").read_text()
    rows: dict[str, tuple[str, set[str] | None]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        unit, layer, _holds, may = cells
        allowed = None if may == "every unit" else set(re.findall(r"`([a-z_]+)`", may))
        rows[unit.strip("`")] = (layer, allowed)
    return rows


def _unit_of_path(path: Path, prism: Path) -> str:
    parts = path.relative_to(prism).parts
    if parts[:2] == ("db", "migrations"):
        return "migrations"
    return parts[0].removesuffix(".py")


def _unit_of_module(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != "prism" or len(parts) < 2:
        return None
    if parts[1:3] == ["db", "migrations"]:
        return "migrations"
    return parts[1]


def _imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text())
    names: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append((node.module, node.lineno))
            # `from prism import bootstrap` imports the unit `bootstrap`.
            if node.module == "prism":
                names.extend((f"prism.{alias.name}", node.lineno) for alias in node.names)
    return names


@pytest.fixture(scope="module")
def modules(repo_root: Path) -> list[tuple[Path, str, list[tuple[str, int]]]]:
    prism = repo_root / "prism"
    return [
        (path, _unit_of_path(path, prism), _imports(path))
        for path in sorted(prism.rglob("*.py"))
        if path != prism / "__init__.py"
    ]


def test_every_module_belongs_to_a_unit_of_the_table(repo_root: Path, modules: list) -> None:
    table = _table(repo_root)
    unknown = sorted(
        {str(path.relative_to(repo_root)) for path, unit, _ in modules if unit not in table}
    )
    assert not unknown, "modules of no unit in docs/architecture.md:\n" + "\n".join(unknown)


def test_imports_point_the_way_the_table_says(repo_root: Path, modules: list) -> None:
    table = _table(repo_root)
    violations = []
    for path, unit, imports in modules:
        allowed = table.get(unit, ("", set()))[1]
        for name, line in imports:
            target = _unit_of_module(name)
            if target is None or target in BASE or target == unit or allowed is None:
                continue
            if target not in allowed:
                violations.append(f"{path.relative_to(repo_root)}:{line} imports {name}")
    assert not violations, "\n".join(violations)


def test_only_the_graphql_layer_and_entries_import_the_web_stack(
    repo_root: Path, modules: list
) -> None:
    violations = [
        f"{path.relative_to(repo_root)}:{line} imports {name}"
        for path, unit, imports in modules
        if unit not in ABOVE_DOMAIN
        for name, line in imports
        if name.split(".")[0] in WEB
    ]
    assert not violations, "\n".join(violations)


def test_sql_is_written_where_the_table_says(repo_root: Path, modules: list) -> None:
    violations = []
    for path, unit, imports in modules:
        relative = str(path.relative_to(repo_root))
        if unit in SQL_HOMES or relative in SQL_HOMES:
            continue
        for name, line in imports:
            if name.split(".")[0] == "sqlalchemy" and name not in SQL_FREE_IMPORTS:
                violations.append(f"{relative}:{line} imports {name}")
    assert not violations, "\n".join(violations)


def test_domain_units_depend_on_each_other_one_way(repo_root: Path, modules: list) -> None:
    table = _table(repo_root)
    domain = {unit for unit, (layer, _) in table.items() if layer == "domain"}
    edges = {
        (unit, _unit_of_module(name))
        for path, unit, imports in modules
        if unit in domain
        for name, _ in imports
        if _unit_of_module(name) in domain and _unit_of_module(name) != unit
    }
    both_ways = sorted(f"{a} <-> {b}" for a, b in edges if (b, a) in edges)
    assert not both_ways, both_ways


def test_the_table_names_only_units_that_exist(repo_root: Path, modules: list) -> None:
    present = {unit for _, unit, _ in modules}
    missing = sorted(set(_table(repo_root)) - present)
    assert not missing, f"docs/architecture.md names units with no module: {missing}"


def test_a_long_module_says_why(repo_root: Path, modules: list) -> None:
    unexplained = []
    for path, _, _ in modules:
        relative = str(path.relative_to(repo_root))
        text = path.read_text()
        lines = len(text.splitlines())
        if lines <= MAX_LINES:
            continue
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if not any(line.startswith("Long because:") for line in docstring.splitlines()):
            unexplained.append(f"{relative}: {lines} lines")
    assert not unexplained, (
        f"modules over {MAX_LINES} lines with no `Long because:` line in their docstring "
        "(split them, or say why not):\n" + "\n".join(unexplained)
    )
