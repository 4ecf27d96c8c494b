"""Documents and their sections."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR, UUID
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from prism.models.base import Base, among, created_at, enum_column, org_fk, pk, updated_at, utcnow
from prism.models.enums import (
    Classification,
    DocumentType,
    ProcessingStatus,
    RiskLevel,
    StorageTier,
)
from prism.models.pagination import Column, Page, PageRequest, keyset_page, window_pages
from prism.models.scope import Scope, within_clearance


class Document(Base):
    __tablename__ = "documents"

    id: Mapped[uuid.UUID] = pk()
    organization_id: Mapped[uuid.UUID] = org_fk()
    uploaded_by: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    # The owning department (the uploader's at upload): RESTRICTED documents stay inside it.
    department: Mapped[str | None] = mapped_column(sa.String(100))
    filename: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    mime_type: Mapped[str] = mapped_column(sa.String(127), nullable=False)
    file_size: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    sha256: Mapped[str] = mapped_column(sa.CHAR(64), nullable=False)
    storage_key: Mapped[str | None] = mapped_column(sa.String(1024))
    document_type: Mapped[DocumentType] = enum_column(
        DocumentType, nullable=False, default=DocumentType.GENERAL
    )
    classification: Mapped[Classification] = enum_column(
        Classification, nullable=False, default=Classification.INTERNAL
    )
    language_code: Mapped[str | None] = mapped_column(sa.String(16))
    word_count: Mapped[int | None] = mapped_column(sa.Integer)
    page_count: Mapped[int | None] = mapped_column(sa.Integer)
    processing_status: Mapped[ProcessingStatus] = enum_column(
        ProcessingStatus, nullable=False, default=ProcessingStatus.UPLOADED
    )
    processing_error: Mapped[str | None] = mapped_column(sa.Text)
    legal_hold: Mapped[bool] = mapped_column(
        sa.Boolean, nullable=False, default=False, server_default=sa.false()
    )
    retention_expires_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    storage_tier: Mapped[StorageTier] = enum_column(
        StorageTier, nullable=False, default=StorageTier.HOT
    )
    total_sections: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    total_feedback_items: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    risk_level: Mapped[RiskLevel | None] = enum_column(RiskLevel)
    confidence: Mapped[float | None] = mapped_column(sa.Float)
    cost_usd: Mapped[Decimal | None] = mapped_column(sa.Numeric(14, 6))
    model_used: Mapped[str | None] = mapped_column(sa.String(200))
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()
    deleted_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))

    __table_args__ = (
        sa.CheckConstraint("file_size >= 0", name="file_size_nonnegative"),
        sa.CheckConstraint("confidence IS NULL OR confidence BETWEEN 0 AND 1", name="confidence"),
        sa.Index("ix_documents_organization_id_created_at", "organization_id", "created_at", "id"),
        sa.Index(
            "ix_documents_organization_id_processing_status", "organization_id", "processing_status"
        ),
        sa.Index("ix_documents_uploaded_by_created_at", "uploaded_by", "created_at"),
        # Dedup: one live document per content hash and organization.
        sa.Index(
            "uq_documents_organization_id_sha256",
            "organization_id",
            "sha256",
            unique=True,
            postgresql_where=sa.text("deleted_at IS NULL"),
        ),
        # The lifecycle job scans only what may expire.
        sa.Index(
            "ix_documents_retention_expires_at",
            "retention_expires_at",
            postgresql_where=sa.text("legal_hold = false AND deleted_at IS NULL"),
        ),
    )


# The text search configuration of a section's language (stemming and stop words), by
# ISO 639-1 code; other languages detected: FALLBACK_SEARCH_CONFIG (words as written); a
# section of unknown language: english. ``prism_search_config(language_code)`` (migration
# 0021) is the same mapping in SQL, which the index and the queries use.
SEARCH_CONFIGS = {"en": "english", "de": "german", "fr": "french"}
FALLBACK_SEARCH_CONFIG = "simple"
UNKNOWN_LANGUAGE_SEARCH_CONFIG = "english"


def search_config(language_code: str | None) -> str:
    """The text search configuration of a language, as ``prism_search_config`` maps it."""
    if language_code is None:
        return UNKNOWN_LANGUAGE_SEARCH_CONFIG
    return SEARCH_CONFIGS.get(language_code, FALLBACK_SEARCH_CONFIG)


class Section(Base):
    __tablename__ = "document_sections"

    id: Mapped[uuid.UUID] = pk()
    organization_id: Mapped[uuid.UUID] = org_fk()
    document_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), sa.ForeignKey("documents.id", ondelete="CASCADE"), nullable=False
    )
    ord: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    name: Mapped[str] = mapped_column(sa.String(500), nullable=False)
    content: Mapped[str] = mapped_column(sa.Text, nullable=False)
    word_count: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    # ISO 639-1, detected at extraction (None: too short or too mixed to tell).
    language_code: Mapped[str | None] = mapped_column(sa.String(16))
    # [{"type", "start", "end", "confidence"}]: offsets only, never the matched text.
    pii_findings: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, nullable=False, default=list, server_default=sa.text("'[]'::jsonb")
    )
    # Heading and text with PII masked: the only text any search index holds (NULL until a
    # section is (re)indexed: rows older than search, before `prism search reindex`).
    search_text: Mapped[str | None] = mapped_column(sa.Text, deferred=True)
    # PostgreSQL's full-text index of search_text, analysed in the section's language, kept
    # by the database in the same transaction as the text.
    search_vector: Mapped[Any] = mapped_column(
        TSVECTOR,
        sa.Computed(
            "to_tsvector(prism_search_config(language_code), coalesce(search_text, ''))",
            persisted=True,
        ),
        deferred=True,
    )
    # RESTRICTED documents: name and content sealed with the organization's data key
    # (AES-GCM); ``name``/``content`` then hold empty strings (see prism.crypto.envelope).
    sealed: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    # Text read by OCR (a scanned page, an image), and Tesseract's confidence in it (0..1).
    text_from_ocr: Mapped[bool] = mapped_column(
        sa.Boolean, nullable=False, default=False, server_default=sa.false()
    )
    ocr_confidence: Mapped[float | None] = mapped_column(sa.Float)
    created_at: Mapped[datetime] = created_at()

    __table_args__ = (
        sa.UniqueConstraint("document_id", "ord"),
        sa.CheckConstraint(
            "ocr_confidence IS NULL OR (text_from_ocr AND ocr_confidence BETWEEN 0 AND 1)",
            name="ocr_confidence",
        ),
        sa.Index("ix_document_sections_search_vector", "search_vector", postgresql_using="gin"),
    )


@dataclass(frozen=True)
class DocumentFilter:
    processing_status: Sequence[ProcessingStatus] | None = None
    classification: Sequence[Classification] | None = None
    document_type: Sequence[DocumentType] | None = None
    risk_level: Sequence[RiskLevel] | None = None
    uploaded_by: uuid.UUID | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    legal_hold: bool | None = None


RISK_RANK = sa.case(
    {RiskLevel.LOW.value: 1, RiskLevel.MEDIUM.value: 2, RiskLevel.HIGH.value: 3},
    value=sa.cast(Document.risk_level, sa.String),
    else_=0,
)

# Document orderings: the columns of the keyset, and how to read the key off a row.
DOCUMENT_ORDERINGS: dict[str, tuple[Sequence[Column], Any]] = {
    "CREATED_AT": ((Document.created_at, Document.id), lambda d: (d.created_at, d.id)),
    "FILENAME": ((Document.filename, Document.id), lambda d: (d.filename, d.id)),
    "FILE_SIZE": ((Document.file_size, Document.id), lambda d: (d.file_size, d.id)),
    "RISK": (
        (RISK_RANK, Document.id),
        lambda d: (d.risk_level.rank if d.risk_level else 0, d.id),
    ),
}


def visible_documents(scope: Scope) -> sa.ColumnElement[bool]:
    """The documents ``scope`` may see: the SQL form of the read rule of ``authz.policy``."""
    return sa.and_(
        Document.organization_id == scope.organization_id,
        Document.deleted_at.is_(None),
        within_clearance(scope, Document.classification, Document.department),
    )


def _filtered(scope: Scope, flt: DocumentFilter | None) -> sa.Select[tuple[Document]]:
    query = sa.select(Document).where(visible_documents(scope))
    if flt is None:
        return query
    if flt.processing_status:
        query = query.where(Document.processing_status.in_(flt.processing_status))
    if flt.classification:
        query = query.where(Document.classification.in_(flt.classification))
    if flt.document_type:
        query = query.where(Document.document_type.in_(flt.document_type))
    if flt.risk_level:
        query = query.where(Document.risk_level.in_(flt.risk_level))
    if flt.uploaded_by is not None:
        query = query.where(Document.uploaded_by == flt.uploaded_by)
    if flt.created_after is not None:
        query = query.where(Document.created_at >= flt.created_after)
    if flt.created_before is not None:
        query = query.where(Document.created_at < flt.created_before)
    if flt.legal_hold is not None:
        query = query.where(Document.legal_hold.is_(flt.legal_hold))
    return query


async def read_documents(
    session: AsyncSession,
    scope: Scope,
    *,
    flt: DocumentFilter | None,
    page: PageRequest,
    ordering: str = "CREATED_AT",
) -> Page[Document]:
    columns, key_of = DOCUMENT_ORDERINGS[ordering]
    return await keyset_page(session, _filtered(scope, flt), columns, page, key_of)


async def count_documents(
    session: AsyncSession, scope: Scope, *, flt: DocumentFilter | None
) -> int:
    subquery = _filtered(scope, flt).with_only_columns(Document.id).subquery()
    return int(await session.scalar(sa.select(sa.func.count()).select_from(subquery)) or 0)


async def read_documents_by_ids(
    session: AsyncSession, scope: Scope, ids: Sequence[uuid.UUID]
) -> list[Document]:
    if not ids:
        return []
    query = sa.select(Document).where(visible_documents(scope), among(Document.id, ids))
    return list(await session.scalars(query))


async def read_restricted_documents(
    session: AsyncSession, ids: Iterable[uuid.UUID]
) -> list[Document]:
    """Which of ``ids`` are RESTRICTED (in the session's organization, by RLS)."""
    query = sa.select(Document).where(
        Document.id.in_(list(ids)), Document.classification == Classification.RESTRICTED
    )
    return list(await session.scalars(query.order_by(Document.id)))


async def read_document_for_update(
    session: AsyncSession, scope: Scope, document_id: uuid.UUID
) -> Document | None:
    query = (
        sa.select(Document)
        .where(visible_documents(scope), Document.id == document_id)
        .with_for_update()
    )
    return (await session.scalars(query)).one_or_none()


async def soft_delete_document(session: AsyncSession, document: Document) -> None:
    document.deleted_at = utcnow()
    await session.flush()


async def read_live_document_with_hash(
    session: AsyncSession, organization_id: uuid.UUID, sha256: str
) -> Document | None:
    """The organization's live document with these bytes, visible or not."""
    found: Document | None = await session.scalar(
        sa.select(Document).where(
            Document.organization_id == organization_id,
            Document.sha256 == sha256,
            Document.deleted_at.is_(None),
        )
    )
    return found


async def is_document_visible(session: AsyncSession, scope: Scope, document_id: uuid.UUID) -> bool:
    visible = await session.scalar(
        sa.select(sa.literal(True)).where(visible_documents(scope), Document.id == document_id)
    )
    return bool(visible)


async def lock_live_document(session: AsyncSession, document_id: uuid.UUID) -> Document | None:
    """The document (not deleted), row-locked until the transaction ends."""
    document: Document | None = await session.scalar(
        sa.select(Document)
        .where(Document.id == document_id, Document.deleted_at.is_(None))
        .with_for_update()
    )
    return document


async def share_lock_classification(
    session: AsyncSession, document_id: uuid.UUID
) -> Classification | None:
    """The document's classification, its row share-locked until the transaction ends."""
    classification: Classification | None = await session.scalar(
        sa.select(Document.classification)
        .where(Document.id == document_id)
        .with_for_update(read=True)
    )
    return classification


async def read_document_ids_with_originals(
    session: AsyncSession, organization_id: uuid.UUID, classifications: Iterable[Classification]
) -> list[uuid.UUID]:
    """The organization's documents (deleted ones too) with a stored original, of these
    classifications."""
    query = (
        sa.select(Document.id)
        .where(
            Document.organization_id == organization_id,
            Document.storage_key.is_not(None),
            Document.classification.in_(list(classifications)),
        )
        .order_by(Document.id)
    )
    return list((await session.execute(query)).scalars())


async def share_lock_original(
    session: AsyncSession, document_id: uuid.UUID, classifications: Iterable[Classification]
) -> tuple[str | None, StorageTier] | None:
    """The document's storage key and tier if it is of these classifications, its row
    share-locked until the transaction ends (None: not, or not any more)."""
    found = (
        await session.execute(
            sa.select(Document.storage_key, Document.storage_tier)
            .where(
                Document.id == document_id,
                Document.classification.in_(list(classifications)),
            )
            .with_for_update(read=True)
        )
    ).one_or_none()
    return None if found is None else (found.storage_key, found.storage_tier)


# --- sections ------------------------------------------------------------------------------


SECTION_KEY = (Section.ord, Section.id)


async def read_sections_by_ids(
    session: AsyncSession, scope: Scope, ids: Sequence[uuid.UUID]
) -> list[Section]:
    if not ids:
        return []
    query = (
        sa.select(Section)
        .join(Document, Document.id == Section.document_id)
        .where(visible_documents(scope), among(Section.id, ids))
    )
    return list(await session.scalars(query))


async def read_section_pages(
    session: AsyncSession, scope: Scope, document_ids: Sequence[uuid.UUID], page: PageRequest
) -> dict[uuid.UUID, Page[Section]]:
    """One page of sections for each of ``document_ids``, in a single statement."""
    return await window_pages(
        session,
        sa.select(Section)
        .join(Document, Document.id == Section.document_id)
        .where(visible_documents(scope)),
        Section,
        Section.document_id,
        document_ids,
        SECTION_KEY,
        page,
        lambda s: (s.ord, s.id),
    )


async def delete_sections(session: AsyncSession, document_id: uuid.UUID) -> None:
    await session.execute(sa.delete(Section).where(Section.document_id == document_id))


async def read_sections_of_document(session: AsyncSession, document_id: uuid.UUID) -> list[Section]:
    """Every section of the document, in order."""
    query = sa.select(Section).where(Section.document_id == document_id).order_by(Section.ord)
    return list(await session.scalars(query))


async def add_sections(session: AsyncSession, sections: Sequence[Section]) -> None:
    session.add_all(sections)
    await session.flush()


async def read_pii_summaries(
    session: AsyncSession, scope: Scope, document_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[tuple[str, int]]]:
    """PII finding counts by type for each document, in one aggregate statement."""
    summaries: dict[uuid.UUID, list[tuple[str, int]]] = {d: [] for d in document_ids}
    if not document_ids:
        return summaries
    finding = sa.func.jsonb_array_elements(Section.pii_findings).table_valued("value").alias("f")
    kind = finding.c.value.op("->>")("type")
    query = (
        sa.select(Section.document_id, kind, sa.func.count())
        .select_from(Section)
        .join(Document, Document.id == Section.document_id)
        .join(finding, sa.true())
        .where(visible_documents(scope), among(Section.document_id, document_ids))
        .group_by(Section.document_id, kind)
        .order_by(Section.document_id, kind)
    )
    for document_id, pii_type, count in await session.execute(query):
        summaries[document_id].append((pii_type, count))
    return summaries


# --- search indexing -------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexRow:
    """A section with the fields of its document that search filters and facets on."""

    section_id: uuid.UUID
    document_id: uuid.UUID
    organization_id: uuid.UUID
    ord: int
    name: str
    content: str
    pii_findings: list[dict[str, Any]]
    search_text: str | None
    classification: Classification
    department: str | None
    document_type: DocumentType
    risk_level: RiskLevel | None
    legal_hold: bool
    document_created_at: datetime
    # The text is sealed (RESTRICTED): name and content read '', search_text was made from
    # the clear text when it was stored or sealed.
    sealed: bool
    language_code: str | None


_INDEX_COLUMNS = (
    Section.id,
    Section.document_id,
    Section.organization_id,
    Section.ord,
    Section.name,
    Section.content,
    Section.pii_findings,
    Section.search_text,
    Document.classification,
    Document.department,
    Document.document_type,
    Document.risk_level,
    Document.legal_hold,
    Document.created_at,
    Section.sealed.is_not(None),
    Section.language_code,
)


async def read_index_rows(
    session: AsyncSession,
    organization_id: uuid.UUID,
    *,
    document_ids: Sequence[uuid.UUID] | None = None,
    after: uuid.UUID | None = None,
    limit: int | None = None,
) -> list[IndexRow]:
    """Sections of live documents of one organization, in section id order (a keyset: pass
    the last id as ``after``), optionally of some documents only."""
    query = (
        sa.select(*_INDEX_COLUMNS)
        .join(Document, Document.id == Section.document_id)
        .where(Section.organization_id == organization_id, Document.deleted_at.is_(None))
        .order_by(Section.id)
    )
    if document_ids is not None:
        query = query.where(among(Section.document_id, document_ids))
    if after is not None:
        query = query.where(Section.id > after)
    if limit is not None:
        query = query.limit(limit)
    return [IndexRow(*row) for row in await session.execute(query)]


async def count_index_rows(session: AsyncSession, organization_id: uuid.UUID) -> int:
    query = (
        sa.select(sa.func.count())
        .select_from(Section)
        .join(Document, Document.id == Section.document_id)
        .where(Section.organization_id == organization_id, Document.deleted_at.is_(None))
    )
    return int(await session.scalar(query) or 0)


async def write_search_texts(session: AsyncSession, texts: dict[uuid.UUID, str]) -> None:
    """Set the masked search text of sections (one executemany)."""
    if texts:
        await session.execute(
            sa.update(Section), [{"id": k, "search_text": v} for k, v in texts.items()]
        )


async def write_pii_findings(
    session: AsyncSession, findings: dict[uuid.UUID, list[dict[str, Any]]]
) -> None:
    """Set the PII findings of sections (one executemany)."""
    if findings:
        await session.execute(
            sa.update(Section), [{"id": k, "pii_findings": v} for k, v in findings.items()]
        )


async def read_document_any_state(
    session: AsyncSession, organization_id: uuid.UUID, document_id: uuid.UUID
) -> Document | None:
    """A document whether deleted or not (indexing must learn about deletions too)."""
    query = sa.select(Document).where(
        Document.organization_id == organization_id, Document.id == document_id
    )
    return (await session.scalars(query)).one_or_none()


async def read_changed_document_ids(
    session: AsyncSession, organization_id: uuid.UUID, since: datetime
) -> list[uuid.UUID]:
    """Documents changed (or deleted) since ``since``."""
    query = sa.select(Document.id).where(
        Document.organization_id == organization_id, Document.updated_at >= since
    )
    return list(await session.scalars(query))


async def lock_document_for_indexing(session: AsyncSession, document_id: uuid.UUID) -> None:
    """Index runs of one document take turns (a transaction-scoped advisory lock), so an
    older state is never written after a newer one; mutations are not blocked."""
    key = int.from_bytes(document_id.bytes[:8], "big", signed=True)
    await session.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
