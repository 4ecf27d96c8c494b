"""Relay global IDs: opaque base64 of ``Type:uuid``."""

from __future__ import annotations

import base64
import binascii
import uuid

from prism.errors import BadUserInput, NotFound


def to_global_id(type_name: str, row_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{type_name}:{row_id}".encode()).decode().rstrip("=")


def from_global_id(global_id: str) -> tuple[str, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(global_id + "=" * (-len(global_id) % 4)).decode()
        type_name, _, row_id = raw.partition(":")
        return type_name, uuid.UUID(row_id)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadUserInput(f"{global_id!r} is not a valid ID.", argument="id") from exc


def expect_id(global_id: str, type_name: str) -> uuid.UUID:
    """The row id of an ID that must name a ``type_name``; another type is NOT_FOUND."""
    found_type, row_id = from_global_id(global_id)
    if found_type != type_name:
        raise NotFound(f"{type_name} not found.")
    return row_id
