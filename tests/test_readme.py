"""The README is a short read that leads to the rest: what Prism is, the two commands, the
layout, and links to documents that exist. The configuration reference is generated from the
settings and committed, so it names every setting with its current default."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from prism.cli.config_docs import configuration_markdown
from prism.cli.main import main
from prism.config import Settings

README_MAX_LINES = 200
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _documents(repo_root: Path) -> list[Path]:
    return [repo_root / "README.md", *sorted((repo_root / "docs").rglob("*.md"))]


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.MULTILINE)}


def test_configuration_reference_is_what_the_generator_writes_now(repo_root: Path) -> None:
    committed = (repo_root / "docs" / "configuration.md").read_text()
    assert committed == configuration_markdown(), (
        "docs/configuration.md is stale: run `make docs` (or `prism config docs`) and commit it"
    )


def test_the_documented_command_writes_the_reference(tmp_path: Path) -> None:
    output = tmp_path / "configuration.md"
    result = CliRunner().invoke(main, ["config", "docs", "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert output.read_text() == configuration_markdown()


def test_configuration_reference_has_a_row_for_every_setting(repo_root: Path) -> None:
    # Read from the committed file, not the generator: each setting has exactly one row, with
    # its variable and its description.
    text = (repo_root / "docs" / "configuration.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `PRISM_")]
    by_variable = {row.split("|")[1].strip().strip("`"): row for row in rows}
    assert len(by_variable) == len(rows), "a setting has two rows"
    expected = {f"PRISM_{name.upper()}": field for name, field in Settings.model_fields.items()}
    assert sorted(by_variable) == sorted(expected)
    for variable, field in expected.items():
        row = by_variable[variable].replace("&lt;", "<").replace("\\|", "|")
        description = " ".join((field.description or "").split())
        assert description, f"{variable} has no description in prism/config.py"
        assert description in row, variable


def test_the_readme_is_under_two_hundred_lines(repo_root: Path) -> None:
    lines = (repo_root / "README.md").read_text().splitlines()
    assert len(lines) < README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_the_readme_gives_the_two_commands_and_the_makefile_has_them(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text()
    makefile = (repo_root / "Makefile").read_text()
    for target in ("run", "test", "docs"):
        assert f"`make {target}`" in readme, target
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), target
    assert readme.index("`make run`") < readme.index("## Layout"), "the commands come first"


def test_the_layout_map_names_every_package_and_module_of_prism(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text()
    layout = readme[readme.index("## Layout") : readme.index("\n## ", readme.index("## Layout"))]
    packages = [p.name for p in (repo_root / "prism").iterdir() if (p / "__init__.py").exists()]
    modules = [p.name for p in (repo_root / "prism").glob("*.py") if p.name != "__init__.py"]
    assert packages
    assert modules
    missing = [f"prism/{p}/" for p in packages if f"`prism/{p}/`" not in layout]
    missing += [m for m in modules if f"`{m}`" not in layout and f"`prism/{m}`" not in layout]
    assert not missing, f"README.md's layout misses {missing}"
    named = set(re.findall(r"`prism/(\w+)/`", layout))
    assert named <= set(packages), f"the layout names packages that do not exist: {named}"


def test_every_relative_link_points_to_a_file_that_exists(repo_root: Path) -> None:
    broken = []
    for document in _documents(repo_root):
        text = FENCE.sub("", document.read_text())
        for target in LINK.findall(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            path_part, _, anchor = target.partition("#")
            path = (document.parent / path_part).resolve() if path_part else document
            where = f"{document.relative_to(repo_root)} → {target}"
            if not path.exists():
                broken.append(where)
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                broken.append(f"{where} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_readme_links_every_document_in_docs(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text()
    linked = {target.partition("#")[0] for target in LINK.findall(readme)}
    documents = [p.relative_to(repo_root).as_posix() for p in (repo_root / "docs").glob("*.md")]
    assert not [d for d in documents if d not in linked], "README.md does not link them"


def test_the_code_paths_the_documents_cite_exist(repo_root: Path) -> None:
    """A document that names a module (``prism/web/app.py``, ``execution/planner.py``) names
    one that exists: moving code moves its mentions too."""
    prism = repo_root / "prism"
    units = "|".join(sorted(p.name for p in prism.iterdir() if (p / "__init__.py").exists()))
    cited = re.compile(rf"(?<![\w/.])(?:prism/)?((?:{units})/[\w/]+\.py)")
    stale = []
    for document in _documents(repo_root):
        for path in cited.findall(document.read_text()):
            if not (prism / path).exists():
                stale.append(f"{document.relative_to(repo_root)}: {path}")
    assert not stale, "\n".join(stale)


def test_the_files_the_documents_name_exist(repo_root: Path) -> None:
    """A module or test named by its file name alone (``guard.py``, ``test_auth.py``) in the
    README or docs/ (decision records excepted: they tell what was) is a file of the repo."""
    names = {
        path.name
        for folder in ("prism", "tests", "bench", "scripts")
        for path in (repo_root / folder).rglob("*.py")
    }
    named = re.compile(r"`(?:[\w/]*/)?(\w+\.py)")
    documents = [repo_root / "README.md", *sorted((repo_root / "docs").glob("*.md"))]
    stale = [
        f"{document.relative_to(repo_root)}: {name}"
        for document in documents
        for name in named.findall(document.read_text())
        if name not in names
    ]
    assert not stale, "\n".join(stale)
