"""The configuration reference (docs/configuration.md), generated from ``Settings``: one row per
setting with its environment variable, type, default and description, so that the document
cannot leave a setting out or keep an old default (``prism config docs`` writes it; a test
compares the committed file with this output)."""

from __future__ import annotations

import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from prism.config import Settings

HEADER = """\
# Configuration

Generated from `prism/config.py` by `prism config docs` (`make docs`); a test fails when
this file is stale, so a new setting is documented here once it is regenerated.

Every setting is an environment variable (or a line of `.env` in the working directory).
Unset settings take the default; *unset* means the setting has no value and the description
says what Prism does then. A *secret* is never printed or logged. Values outside a range are
refused at start-up, naming the variable. How to point Prism at real PostgreSQL, S3, Bedrock,
Redis and OpenSearch: [operations](operations.md#real-components).

| variable | type | default | meaning |
|---|---|---|---|
"""


def env_var(name: str) -> str:
    """The environment variable of the setting called ``name``."""
    return f"{Settings.model_config.get('env_prefix', '')}{name}".upper()


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        names = [_type_name(arg) for arg in typing.get_args(annotation) if arg is not type(None)]
        return " | ".join(names)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " \\| ".join(f"`{member.value}`" for member in annotation)
    if annotation is SecretStr:
        return "secret"
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(field: FieldInfo) -> str:
    limits: dict[str, Any] = {}
    parts = []
    for item in field.metadata:
        for attr in ("ge", "gt", "le", "lt"):
            if isinstance(item, getattr(annotated_types, attr.title())):
                limits[attr] = getattr(item, attr)
        pattern = getattr(item, "pattern", None)
        if pattern:
            parts.append(f"matching `{pattern}`")
    if "ge" in limits and "le" in limits:
        parts.insert(0, f"{limits.pop('ge')} to {limits.pop('le')}")
    signs = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    parts[:0] = [f"{signs[attr]} {value}" for attr, value in limits.items()]
    return ", ".join(parts)


def _default(field: FieldInfo) -> str:
    value = field.default
    if value is None:
        return "unset"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        value = "true" if value else "false"
    if value == "":
        return "empty"
    return f"`{value}`"


def _cell(text: str) -> str:
    """One table cell: one line, pipes escaped, ``<`` escaped outside code spans."""
    pieces = " ".join(text.split()).replace("|", "\\|").split("`")
    pieces[::2] = [piece.replace("<", "&lt;") for piece in pieces[::2]]
    return "`".join(pieces)


def configuration_markdown() -> str:
    """docs/configuration.md as it should be now."""
    rows = []
    for name, field in Settings.model_fields.items():
        type_name = _type_name(field.annotation).replace(" | ", " \\| ")
        bounds = _bounds(field)
        if bounds:
            type_name = f"{type_name}, {bounds}"
        rows.append(
            f"| `{env_var(name)}` | {type_name} | {_default(field)} | "
            f"{_cell(field.description or '')} |"
        )
    return HEADER + "\n".join(rows) + "\n"
