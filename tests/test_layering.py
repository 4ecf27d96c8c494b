"""Imports point one way: server → GraphQL layer → (authz, search, jobs, ingest, governance)
→ models → config; nothing below the GraphQL layer imports strawberry or starlette."""

from __future__ import annotations

import ast
from pathlib import Path

# package -> the Prism packages it may import (besides itself and prism.errors/observability)
ALLOWED: dict[str, set[str]] = {
    "config": set(),
    "models": {"config"},
    "migrations": {"models"},
    "ingest": {"config"},
    "cache": {"config"},
    "authz": {"models", "config"},
    "governance": {"models", "ingest", "config"},
    # Job handlers run governance work (export bundles) and seal RESTRICTED sections.
    "jobs": {"models", "ingest", "governance", "config"},
    "resolvers": {"authz", "models", "jobs", "ingest", "cache", "governance", "config"},
    "schema": {"resolvers", "authz", "models", "ingest", "cache", "config"},
}
BELOW_GRAPHQL = {"config", "models", "migrations", "ingest", "authz", "jobs", "cache", "governance"}
WEB = ("strawberry", "starlette", "uvicorn")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_imports_point_one_way(repo_root: Path) -> None:
    violations = []
    for package, allowed in ALLOWED.items():
        base = repo_root / "prism" / package
        files = (
            [base.with_suffix(".py")] if base.with_suffix(".py").exists() else base.rglob("*.py")
        )
        for path in files:
            for name in _imports(path):
                parts = name.split(".")
                if parts[0] == "prism" and len(parts) > 1:
                    target = parts[1]
                    if target not in {package, "errors", "observability", *allowed}:
                        violations.append(f"{path.relative_to(repo_root)} imports {name}")
                if package in BELOW_GRAPHQL and parts[0] in WEB:
                    violations.append(f"{path.relative_to(repo_root)} imports {name}")
    assert not violations, "\n".join(violations)
