"""Signed, expiring links: a download path that carries its own proof (an HMAC over what it
names and until when), so serving it needs no session."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import datetime

from prism.models.base import utcnow


class ExportLinks:
    """Signed, expiring download links served by Prism (``/exports/<org>/<id>``): the bundle
    is sealed with the organization's data key at rest, so it is decrypted on the way out
    (an S3 presigned URL would hand out ciphertext, or need the bundle stored in the clear)."""

    def __init__(self, key: bytes) -> None:
        self._key = hmac.new(key, b"prism-export-links", hashlib.sha256).digest()

    def _mac(self, organization_id: uuid.UUID, export_id: uuid.UUID, expires: int) -> str:
        message = f"{organization_id}/{export_id}/{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def path(self, organization_id: uuid.UUID, export_id: uuid.UUID, expires_at: datetime) -> str:
        expires = int(expires_at.timestamp())
        token = self._mac(organization_id, export_id, expires)
        return f"/exports/{organization_id}/{export_id}?expires={expires}&token={token}"

    def verify(
        self, organization_id: uuid.UUID, export_id: uuid.UUID, expires: int, token: str
    ) -> bool:
        expected = self._mac(organization_id, export_id, expires)
        return hmac.compare_digest(expected, token) and expires > utcnow().timestamp()
