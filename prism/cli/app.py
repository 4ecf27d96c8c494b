"""The ``prism`` command's root group and what its commands share: running a piece of work with
services on a migrated database, printing (JSON or text), and naming organizations. The
commands themselves live by area in the sibling modules (``prism.cli.main`` assembles
them)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
from rich.console import Console

from prism import bootstrap, tracing
from prism.cli.errors import FailsInOneLine
from prism.config import Settings
from prism.errors import PrismError
from prism.identity import organizations
from prism.models.enums import Classification, Role
from prism.observability import configure_logging
from prism.services import Services

T = TypeVar("T")
console = Console(stderr=True)


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT: what a long-running command (a worker, a relay)
    drains and stops on. Call it inside the running loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


def with_services(work: Callable[[Services], Awaitable[T]], url: str | None = None) -> T:
    """Run ``work`` with services on a migrated database; domain errors exit 1, said plainly."""

    async def work_with_services() -> T:
        settings = Settings()
        nonlocal url
        url = url or await bootstrap.prepare_database(settings)
        services = bootstrap.build_services(settings, url)
        try:
            return await work(services)
        finally:
            await services.close()

    try:
        return asyncio.run(work_with_services())
    except PrismError as error:
        console.print(f"[red]error:[/red] {error.message}", soft_wrap=True)
        sys.exit(1)


def choice(enum: type[Role] | type[Classification]) -> click.Choice[str]:
    return click.Choice([m.value for m in enum], case_sensitive=False)


def emit(obj: dict[str, Any], as_json: bool, text: str) -> None:
    if as_json:
        click.echo(json.dumps(obj, default=str))
    else:
        click.echo(text)


# ``--org``: the organization (name or id) a command acts in, or, where it is optional, the
# one organization a command acts in instead of all of them (``organization_ids``).
organization_option = click.option(
    "--org", "org_ref", required=True, help="Organization name or id."
)
organizations_option = click.option(
    "--org", "org_ref", default=None, help="One organization (name or id); default all."
)


@click.group(cls=FailsInOneLine)
@click.pass_context
def main(context: click.Context) -> None:
    """Prism: the GraphQL data-platform API of AI document review."""
    settings = Settings()
    # Traces (when OTEL_EXPORTER_OTLP_ENDPOINT is set) are named by the command: prism-api,
    # prism-worker, prism-events, ...
    command = context.invoked_subcommand or "cli"
    tracing.configure(SERVICE_NAMES.get(command, f"prism-{command}"))
    configure_logging(
        settings.log_level, json=settings.log_json, processors=tracing.log_processors()
    )


SERVICE_NAMES = {"serve": "prism-api"}


async def organization_ids(services: Services, org_ref: str | None) -> list[Any]:
    from prism.models.organizations import read_organization_ids

    if org_ref is not None:
        return [await organizations.find_organization(services, org_ref)]
    async with services.db.transaction(None) as session:
        return await read_organization_ids(session)
