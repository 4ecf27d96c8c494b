"""The ``prism`` command: the root group (``prism.cli.app``) with every area's commands
registered on it."""

from __future__ import annotations

from prism.cli import (  # noqa: F401 (each module registers its commands on `main`)
    config,
    events,
    governance,
    jobs,
    keys,
    operations,
    organizations,
    search,
    serve,
)
from prism.cli.app import main

__all__ = ["main"]
