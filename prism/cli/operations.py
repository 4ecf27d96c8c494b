"""``prism operations`` (the safelist of registered operations) and ``prism schema`` (the
GraphQL surface)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from prism.cli.app import console, main, with_services
from prism.errors import PrismError
from prism.services import Services


@main.group()
def operations() -> None:
    """Registered operations: the safelist that BI tools and production clients call by hash."""


@operations.command("push")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--json", "as_json", is_flag=True, help="Print name → sha256 as JSON.")
def operations_push(files: tuple[Path, ...], as_json: bool) -> None:
    """Register every named operation of FILES (validated against the schema)."""
    from prism.models.registered_operations import register_operations
    from prism.operations.persisted import split_operations
    from prism.schema import build_schema

    graphql_schema = build_schema()._schema
    found: list[tuple[str, str]] = []
    for path in files:
        try:
            found.extend(split_operations(path.read_text(), graphql_schema))
        except PrismError as error:
            console.print(f"[red]error:[/red] {path}: {error.message}", soft_wrap=True)
            sys.exit(1)
        except UnicodeDecodeError:
            console.print(f"[red]error:[/red] {path}: not UTF-8 text", soft_wrap=True)
            sys.exit(1)

    async def work(services: Services) -> list[tuple[str, str, bool]]:
        async with services.db.transaction(None) as session:
            return await register_operations(session, found)

    stored = with_services(work)
    if as_json:
        click.echo(json.dumps({name: digest for name, digest, _ in stored}, indent=2))
        return
    table = Table("operation", "")
    table.add_column("sha256", no_wrap=True, min_width=64)
    for name, digest, new in stored:
        table.add_row(name, "registered" if new else "already registered", digest)
    Console().print(table)


@operations.command("list")
def operations_list() -> None:
    """The registered operations."""
    from prism.models.registered_operations import list_operations

    async def work(services: Services) -> list[tuple[str, str, str]]:
        async with services.db.transaction(None) as session:
            rows = await list_operations(session)
        return [(r.name, r.sha256, r.created_at.isoformat()) for r in rows]

    table = Table("operation", "registered at")
    table.add_column("sha256", no_wrap=True, min_width=64)
    for name, digest, created in with_services(work):
        table.add_row(name, created[:19], digest)
    Console().print(table)


@main.group()
def schema() -> None:
    """The GraphQL schema."""


@schema.command("export")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("schema.graphql"),
    show_default=True,
)
def schema_export(output: Path) -> None:
    """Write the SDL of the public surface (committed as schema.graphql)."""
    from prism.schema import export_sdl

    output.write_text(export_sdl())
    console.print(f"Wrote {output}")
