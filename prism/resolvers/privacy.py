"""GDPR mutations: authorize, call prism.privacy.gdpr, audit, in the request's
transaction."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from prism.authz.policy import Action, Resource, require
from prism.errors import BadUserInput, Conflict, NotFound
from prism.execution.context import Context
from prism.models import users as user_models
from prism.models.governance_data import DataExport
from prism.models.jobs import Job
from prism.models.users import User
from prism.privacy import gdpr
from prism.privacy.gdpr import Erasure as Erasure  # the receipt the schema maps
from prism.privacy.gdpr import cleanup_complete as cleanup_complete


def _resource(user: User) -> Resource:
    return Resource(organization_id=user.organization_id, kind="User", owner_id=user.id)


async def _user_for_update(ctx: Context, session: AsyncSession, user_id: uuid.UUID) -> User:
    principal = ctx.require_principal()
    rows = await user_models.read_users_by_ids(
        session, principal.organization_id, [user_id], for_update=True
    )
    if not rows:
        raise NotFound("User not found.")
    return rows[0]


async def export_user_data(ctx: Context, user_id: uuid.UUID) -> DataExport:
    principal = ctx.require_principal()
    async with ctx.transaction.write() as session:
        subject = await _user_for_update(ctx, session, user_id)
        require(principal, Action.USER_EXPORT, _resource(subject))
        if subject.erased_at is not None:
            raise Conflict("The user has been erased: there is nothing of them to export.")
        export = await gdpr.request_export(
            session,
            organization_id=principal.organization_id,
            subject_id=subject.id,
            requested_by=principal.user_id,
            scope=principal.scope(),
            max_attempts=ctx.services.settings.job_max_attempts,
        )
        await ctx.audit(
            session,
            event_type="user.export",
            category="governance",
            description=f"Export of the data of user {subject.id} requested",
            resource_type="User",
            resource_id=subject.id,
            after={"exportId": str(export.id), "jobId": str(export.job_id)},
        )
        return export


async def erase_user(ctx: Context, user_id: uuid.UUID) -> Erasure:
    principal = ctx.require_principal()
    async with ctx.transaction.write() as session:
        subject = await _user_for_update(ctx, session, user_id)
        require(principal, Action.USER_ERASE, _resource(subject))
        if subject.id == principal.user_id:
            raise BadUserInput("Erase another ADMIN's account, not your own.", argument="userId")
        erasure = await gdpr.erase_user(session, subject)
        await gdpr.schedule_cleanup(
            session, erasure, principal.organization_id, ctx.services.settings.job_max_attempts
        )
        # The receipt: names the person by id only (the pseudonym), never by address.
        event = await ctx.audit_event(
            session,
            event_type="user.erase",
            category="governance",
            description=f"User {subject.id} erased (pseudonymized)",
            resource_type="User",
            resource_id=subject.id,
            after={
                "documentsDeleted": erasure.documents_deleted,
                "documentsKeptForLegalHold": erasure.documents_kept_for_legal_hold,
                "auditEventsRetained": erasure.audit_events_retained,
                "retained": erasure.retained,
                "cleanupJobId": str(erasure.cleanup_job.id) if erasure.cleanup_job else None,
            },
        )
        erasure.audit_event_id = event.id
        return erasure


async def erasure_status(ctx: Context, user_id: uuid.UUID) -> tuple[User, list[Job], int] | None:
    """A person's erasure, its cleanup jobs and the count of their documents still kept for
    a legal hold (ADMIN); None if they were never erased."""
    principal = ctx.require_principal()
    require(principal, Action.JOB_ADMIN)
    async with ctx.transaction.read() as session:
        rows = await user_models.read_users_by_ids(session, principal.organization_id, [user_id])
        if not rows:
            raise NotFound("User not found.")
        if rows[0].erased_at is None:
            return None
        jobs = await gdpr.read_cleanup_jobs(session, principal.organization_id, user_id)
        held = await gdpr.count_held_documents(session, user_id)
    return rows[0], jobs, held
