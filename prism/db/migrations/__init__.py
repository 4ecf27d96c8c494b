"""Alembic migrations, run through these helpers (``prism migrate``, tests, start-up).

Alembic's commands are synchronous and our env runs the async engine with ``asyncio.run``,
so from async code call them through ``asyncio.to_thread``."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from prism.db.engine import async_url

HERE = Path(__file__).parent


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", str(HERE / "versions"))
    # <position in the chain>_<revision id>_<slug>.py: file order is chain order. Revision
    # ids are what databases record, so the early ones keep theirs even where they are out of
    # sequence; a new revision takes the next number as its id (`--rev-id 0016`), so both
    # parts agree from 0013 on.
    cfg.set_main_option("file_template", "%%(rev)s_%%(rev)s_%%(slug)s")
    cfg.attributes["url"] = async_url(url)
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def check(url: str) -> None:
    """Raise if the models and the migrated database differ (a migration is missing)."""
    command.check(alembic_config(url))
