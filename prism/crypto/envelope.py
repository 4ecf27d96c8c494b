"""Envelope encryption by classification: each organization has one data key (AES-256-GCM),
stored only wrapped by a key-encryption key (``prism.crypto.keyring``). RESTRICTED
sections, the findings of their analyses (which quote them) and export bundles are sealed
with it, and so are the stored originals of CONFIDENTIAL and RESTRICTED documents
(``prism.documents.originals``).

A sealed value is ``version (1) | data key id (16) | nonce (12) | ciphertext+tag``; the
associated data binds it to its row and purpose (a section's ciphertext copied onto another
section does not open). Unwrapped data keys are cached in the process: a re-wrap (``prism
keys rotate``) changes the wrapped form only, so running servers keep working throughout.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.ext.asyncio import AsyncSession

from prism.crypto.keyring import KeyEncryptionKeys, KeyUnavailable
from prism.db.engine import Database
from prism.models import data_keys as key_models
from prism.models.analyses import Analysis
from prism.models.documents import Document, Section
from prism.models.enums import Classification
from prism.models.organizations import read_organization_ids

VERSION = b"\x02"
_HEADER = 1 + 16 + 12
log = structlog.get_logger("prism.encryption")


class Envelope:
    def __init__(self, keks: KeyEncryptionKeys, db: Database) -> None:
        self.keks = keks
        self.db = db
        self._keys: dict[uuid.UUID, tuple[uuid.UUID, AESGCM]] = {}
        self._raw: dict[uuid.UUID, bytes] = {}

    @staticmethod
    def _wrap_context(organization_id: uuid.UUID) -> bytes:
        return b"prism-data-key:" + organization_id.bytes

    async def data_key(
        self, session: AsyncSession, organization_id: uuid.UUID
    ) -> tuple[uuid.UUID, AESGCM]:
        """The organization's data key (created and wrapped on first use)."""
        cached = self._keys.get(organization_id)
        if cached is not None:
            return cached
        row = await key_models.read_data_key(session, organization_id)
        if row is None:
            # Created and committed in a transaction of its own: if the caller's rolled back
            # after sealing, a key cached here but never stored would seal data nobody could
            # open again.
            fresh = secrets.token_bytes(32)
            kek_id, wrapped = await self.keks.wrap(fresh, self._wrap_context(organization_id))
            async with self.db.transaction(organization_id) as own:
                row = await key_models.insert_data_key(
                    own, organization_id=organization_id, kek_id=kek_id, wrapped_key=wrapped
                )
            if row.kek_id != self.keks.current_id:
                # A rotation made another KEK current between the wrap and the commit (and
                # may have finished without seeing this row): re-wrap it now, so no data key
                # is left behind under a KEK about to be retired.
                await _rewrap(self.db, self.keks, organization_id)
                async with self.db.transaction(organization_id) as own:
                    row = await key_models.read_data_key(own, organization_id)
                assert row is not None
        try:
            plain = await self.keks.unwrap(
                row.kek_id, row.wrapped_key, self._wrap_context(organization_id)
            )
        except KeyUnavailable as exc:
            # The client sees SERVICE_UNAVAILABLE; the operator reads why here.
            log.error(
                "data key unavailable",
                organization_id=str(organization_id),
                kek_id=row.kek_id,
                reason=exc.reason,
            )
            raise
        self._keys[organization_id] = (row.id, AESGCM(plain))
        self._raw[organization_id] = plain
        return self._keys[organization_id]

    async def stream_key(
        self, session: AsyncSession, organization_id: uuid.UUID
    ) -> tuple[uuid.UUID, bytes]:
        """The organization's data key (its id and bytes) for sealed objects, which derive a
        key per object from it (``prism.crypto.sealed``)."""
        key_id, _ = await self.data_key(session, organization_id)
        return key_id, self._raw[organization_id]

    def cached_stream_key(self, organization_id: uuid.UUID) -> tuple[uuid.UUID, bytes] | None:
        cached = self._keys.get(organization_id)
        return None if cached is None else (cached[0], self._raw[organization_id])

    async def seal(
        self, session: AsyncSession, organization_id: uuid.UUID, plaintext: bytes, context: bytes
    ) -> bytes:
        key_id, key = await self.data_key(session, organization_id)
        nonce = os.urandom(12)
        return VERSION + key_id.bytes + nonce + key.encrypt(nonce, plaintext, context)

    async def open(
        self, session: AsyncSession, organization_id: uuid.UUID, sealed: bytes, context: bytes
    ) -> bytes:
        return self._decrypt(await self.data_key(session, organization_id), sealed, context)

    def open_cached(self, organization_id: uuid.UUID, sealed: bytes, context: bytes) -> bytes:
        """``open`` with a data key this process already holds (loaded by ``data_key``): for
        long reads that should not keep a database connection, such as a bundle download."""
        cached = self._keys.get(organization_id)
        if cached is None:
            raise ValueError("the organization's data key is not loaded")
        return self._decrypt(cached, sealed, context)

    @staticmethod
    def _decrypt(data_key: tuple[uuid.UUID, AESGCM], sealed: bytes, context: bytes) -> bytes:
        key_id, key = data_key
        if len(sealed) < _HEADER + 16 or sealed[:1] != VERSION:
            raise ValueError("not a sealed value")
        if sealed[1:17] != key_id.bytes:
            raise ValueError("sealed with another organization's data key")
        try:
            return key.decrypt(sealed[17:29], sealed[29:], context)
        except InvalidTag as exc:
            raise ValueError("the sealed value was altered or belongs elsewhere") from exc

    # --- sections ----------------------------------------------------------------------------

    @staticmethod
    def _section_context(section: Section) -> bytes:
        return b"prism-section:" + section.id.bytes

    async def seal_sections(self, session: AsyncSession, sections: Sequence[Section]) -> None:
        """Move name and content into the sealed column (the text columns keep '')."""
        for section in sections:
            if section.sealed is not None:
                continue
            plain = orjson.dumps({"name": section.name, "content": section.content})
            section.sealed = await self.seal(
                session, section.organization_id, plain, self._section_context(section)
            )
            section.name = ""
            section.content = ""

    async def unseal_sections(self, session: AsyncSession, sections: Sequence[Section]) -> None:
        """Store sections in the clear again (a document classified below RESTRICTED)."""
        for section in sections:
            if section.sealed is None:
                continue
            name, content = await self._opened(session, section)
            section.name, section.content, section.sealed = name, content, None

    async def open_sections(self, session: AsyncSession, sections: Iterable[Section]) -> None:
        """Decrypt loaded sections for this read, without marking them changed (nothing
        decrypted is ever flushed back)."""
        for section in sections:
            if section.sealed is None:
                continue
            name, content = await self._opened(session, section)
            key_models.set_loaded(section, "name", name)
            key_models.set_loaded(section, "content", content)

    async def _opened(self, session: AsyncSession, section: Section) -> tuple[str, str]:
        plain = orjson.loads(
            await self.open(
                session,
                section.organization_id,
                section.sealed or b"",
                self._section_context(section),
            )
        )
        return str(plain["name"]), str(plain["content"])

    # --- analysis findings -------------------------------------------------------------------

    @staticmethod
    def _findings_context(analysis_id: uuid.UUID) -> bytes:
        return b"prism-analysis:" + analysis_id.bytes

    async def seal_findings(
        self,
        session: AsyncSession,
        organization_id: uuid.UUID,
        analysis_id: uuid.UUID,
        items: list[dict[str, Any]],
    ) -> bytes:
        context = self._findings_context(analysis_id)
        return await self.seal(session, organization_id, orjson.dumps(items), context)

    async def _findings(self, session: AsyncSession, analysis: Analysis) -> list[dict[str, Any]]:
        context = self._findings_context(analysis.id)
        plain = await self.open(session, analysis.organization_id, analysis.sealed or b"", context)
        items: list[dict[str, Any]] = orjson.loads(plain)
        return items

    async def open_analyses(self, session: AsyncSession, analyses: Iterable[Analysis]) -> None:
        """Decrypt loaded analyses' findings for this read (never flushed back)."""
        for analysis in analyses:
            if analysis.sealed is not None:
                items = await self._findings(session, analysis)
                key_models.set_loaded(analysis, "feedback_items", items)

    async def apply_classification(self, session: AsyncSession, document: Document) -> None:
        """Seal a RESTRICTED document's sections and analysis findings, unseal any other's."""
        sections, analyses = await key_models.read_sealable_rows(session, document.id)
        if document.classification is Classification.RESTRICTED:
            await self.seal_sections(session, sections)
            for analysis in analyses:
                if analysis.sealed is None:
                    analysis.sealed = await self.seal_findings(
                        session, analysis.organization_id, analysis.id, analysis.feedback_items
                    )
                    analysis.feedback_items = []
        else:
            await self.unseal_sections(session, sections)
            for analysis in analyses:
                if analysis.sealed is not None:
                    analysis.feedback_items = await self._findings(session, analysis)
                    analysis.sealed = None
        await session.flush()


async def _rewrap(
    db: Database, keks: KeyEncryptionKeys, organization_id: uuid.UUID
) -> tuple[uuid.UUID, str, str] | None:
    """Re-wrap one organization's data key with the current KEK, under its row lock (None if
    it has none or is already under the current KEK)."""
    async with db.transaction(organization_id) as session:
        row = await key_models.read_data_key(session, organization_id, for_update=True)
        if row is None or row.kek_id == keks.current_id:
            return None
        context = Envelope._wrap_context(organization_id)
        plain = await keks.unwrap(row.kek_id, row.wrapped_key, context)
        kek_id, wrapped = await keks.wrap(plain, context)
        old = row.kek_id
        await key_models.rewrap_data_key(session, row, kek_id=kek_id, wrapped_key=wrapped)
    return organization_id, old, kek_id


ROTATION_PASSES = 5


async def rotate(db: Database, envelope: Envelope) -> list[tuple[uuid.UUID, str, str]]:
    """Re-wrap every organization's data key with the current KEK, one organization per
    transaction: (organization, old KEK id, new KEK id) of each re-wrapped key. The data key
    itself, and so every ciphertext, stays as it is.

    It converges: passes repeat (re-reading the organizations) until one finds no data key
    under a non-current KEK, so a key created by a server while a pass ran is re-wrapped too
    (a server also re-wraps a key it created under a KEK that stopped being current before
    its commit: ``Envelope.data_key``). ``key_status`` verifies the result."""
    changed: list[tuple[uuid.UUID, str, str]] = []
    for _ in range(ROTATION_PASSES):
        async with db.transaction(None) as session:
            organizations = await read_organization_ids(session)
        found = [await _rewrap(db, envelope.keks, org) for org in organizations]
        done = [entry for entry in found if entry is not None]
        changed.extend(done)
        if not done:
            break
    return changed


async def key_status(db: Database, envelope: Envelope) -> dict[str, list[uuid.UUID]]:
    """The organizations whose data key each KEK wraps (``prism keys status``): a retired KEK
    may be removed from the keyring once it wraps none."""
    async with db.transaction(None) as session:
        organizations = await read_organization_ids(session)
    by_kek: dict[str, list[uuid.UUID]] = {}
    for organization_id in organizations:
        async with db.transaction(organization_id) as session:
            row = await key_models.read_data_key(session, organization_id)
        if row is not None:
            by_kek.setdefault(row.kek_id, []).append(organization_id)
    return by_kek
