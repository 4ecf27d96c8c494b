"""GDPR fields: each calls its use case (``prism.privacy``) in the request's transaction."""

from __future__ import annotations

import uuid

from prism.execution.context import Context
from prism.models.exports import DataExport
from prism.models.jobs import Job
from prism.models.users import User
from prism.privacy import erasure, export
from prism.privacy.erasure import Erasure as Erasure  # the receipt the schema maps
from prism.privacy.erasure import cleanup_complete as cleanup_complete


async def export_user_data(ctx: Context, user_id: uuid.UUID) -> DataExport:
    principal = ctx.require_principal()
    async with ctx.transaction.write() as session:
        return await export.export_user_data(session, ctx.services, principal, ctx.meta, user_id)


async def erase_user(ctx: Context, user_id: uuid.UUID) -> Erasure:
    principal = ctx.require_principal()
    async with ctx.transaction.write() as session:
        return await erasure.erase_user_account(session, ctx.services, principal, ctx.meta, user_id)


async def erasure_status(ctx: Context, user_id: uuid.UUID) -> tuple[User, list[Job], int] | None:
    """A person's erasure, its cleanup jobs and the count of their documents still kept for
    a legal hold (ADMIN); None if they were never erased."""
    principal = ctx.require_principal()
    async with ctx.transaction.read() as session:
        return await erasure.read_erasure_status(session, ctx.services, principal, user_id)
