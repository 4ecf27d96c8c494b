"""What the command line says when a command fails the way commands are expected to fail: a
file that is missing or unreadable, a setting that is refused, a service (PostgreSQL, the
object store, OpenSearch, Redis) that cannot be reached or refuses, a backup that cannot be
read. One clear line and a non-zero exit, never a traceback (which is for bugs; with
PRISM_LOG_LEVEL=DEBUG the traceback is logged too)."""

from __future__ import annotations

from typing import Any

import click
import structlog

log = structlog.get_logger("prism.cli")
LONGEST = 300


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[0] if lines else "")[:LONGEST]


def _os_error(exc: OSError) -> str:
    if isinstance(exc, TimeoutError):
        return f"timed out{': ' + _first_line(str(exc)) if str(exc) else ''}"
    if exc.filename is not None:
        return f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    if isinstance(exc, ConnectionError) or exc.errno is not None:
        return f"cannot connect: {_first_line(str(exc)) or type(exc).__name__}"
    return _first_line(str(exc)) or type(exc).__name__


def expected_failure(exc: BaseException) -> str | None:
    """The one line for an expected failure; None for anything else (a bug: it propagates)."""
    import asyncpg
    import pydantic
    import sqlalchemy.exc

    from prism.db.faults import DatabaseUnavailable
    from prism.errors import PrismError
    from prism.governance.backup import BackupError
    from prism.search.backend import SearchUnavailable

    if isinstance(exc, BaseExceptionGroup):
        said = [expected_failure(inner) for inner in exc.exceptions]
        return said[0] if said and all(said) else None
    if isinstance(exc, PrismError):
        return exc.message
    if isinstance(exc, BackupError | SearchUnavailable):
        return _first_line(str(exc))
    if isinstance(exc, DatabaseUnavailable):  # the engine's name for a lost or refused connection
        return f"database: {_first_line(str(exc))}"
    if isinstance(exc, pydantic.ValidationError):
        error = exc.errors()[0]
        where = "_".join(str(part) for part in error["loc"])
        setting = f"PRISM_{where.upper()}" if exc.title == "Settings" else where
        return f"invalid setting {setting}: {error['msg']}"
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig is not None:
        # SQLAlchemy's text carries the statement; the driver's first line is the reason.
        return f"database: {_first_line(str(exc.orig)) or type(exc.orig).__name__}"
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
        return f"database: {_first_line(str(exc)) or type(exc).__name__}"
    if isinstance(exc, OSError):
        return _os_error(exc)
    if isinstance(exc, UnicodeDecodeError):
        return f"a file is not {exc.encoding.upper()} text (byte {exc.start})"
    return _service_error(exc)


def _service_error(exc: BaseException) -> str | None:
    """The object store's, OpenSearch's and Redis's client errors, by module (their libraries
    are imported only by the commands that use them)."""
    module = type(exc).__module__.split(".")[0]
    if module in {"botocore", "aiobotocore", "boto3"}:
        return f"object store: {_first_line(str(exc)) or type(exc).__name__}"
    if module == "opensearchpy":
        return f"OpenSearch: {type(exc).__name__}"
    if module == "redis":
        return f"Redis: {_first_line(str(exc)) or type(exc).__name__}"
    return None


class FailsInOneLine(click.Group):
    """The ``prism`` group: an expected failure of any command (the group's own callback
    included) is one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            message = expected_failure(exc)
            if message is None:
                raise
            log.debug("command failed", exc_info=True)
            click.secho("error: ", fg="red", err=True, nl=False)
            click.echo(message, err=True)
            ctx.exit(1)
