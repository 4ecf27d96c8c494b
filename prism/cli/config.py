"""``prism config`` and ``policy``: references generated from the code (settings, the access
policy)."""

from __future__ import annotations

from pathlib import Path

import click

from prism.cli.app import console, main


@main.group()
def config() -> None:
    """The settings (PRISM_* environment variables)."""


@config.command("docs")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("docs/configuration.md"),
    show_default=True,
)
def config_docs(output: Path) -> None:
    """Write the configuration reference generated from the settings (docs/configuration.md)."""
    from prism.cli.config_docs import configuration_markdown

    output.write_text(configuration_markdown())
    console.print(f"Wrote {output}")


@main.group()
def policy() -> None:
    """The access policy."""


@policy.command("table")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("docs/policy.md"),
    show_default=True,
)
def policy_table(output: Path) -> None:
    """Write the role × scope × action table generated from the policy code."""
    from prism.authz.policy import policy_table as table

    output.write_text(table())
    console.print(f"Wrote {output}")
