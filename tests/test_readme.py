"""The README documents every setting."""

from __future__ import annotations

from pathlib import Path

from prism.config import Settings


def test_every_setting_is_in_the_readme(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text()
    missing = [
        f"PRISM_{name.upper()}"
        for name in Settings.model_fields
        if f"`PRISM_{name.upper()}`" not in readme
    ]
    assert not missing, missing
