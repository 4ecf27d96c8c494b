"""Audited reads: a request that returned the text of RESTRICTED documents records one
``document.read_restricted`` event per document (``Context.finish`` calls this, in a
transaction of its own, once the request's transaction has ended)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession

from prism import audit
from prism.authz.principal import Principal
from prism.models.audit import RequestMeta, Subject
from prism.models.documents import read_restricted_documents


async def record_restricted_reads(
    session: AsyncSession,
    principal: Principal,
    meta: RequestMeta,
    document_ids: Iterable[uuid.UUID],
) -> None:
    """Record the reads of those of ``document_ids`` that are RESTRICTED."""
    for document in await read_restricted_documents(session, document_ids):
        await audit.record(
            session,
            principal,
            meta,
            organization_id=document.organization_id,
            event_type="document.read_restricted",
            category="data_access",
            description=f"Restricted content of {document.filename} read",
            resource_type="Document",
            resource_id=document.id,
            subject=Subject(document.classification, document.department),
        )
