"""Audit events and background jobs; the audit and job fields of the root Query."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import cast

import strawberry
from strawberry.scalars import JSON

from prism.authz.policy import may_read_token
from prism.execution.ids import expect_id, from_global_id, to_global_id
from prism.models import audit as audit_models
from prism.models import jobs as job_models
from prism.models.pagination import Page
from prism.resolvers import audit as audit_resolvers
from prism.resolvers import jobs as job_resolvers
from prism.schema.base import After, Edge, First, Info, Node, PageInfo, edges_of
from prism.schema.enums import JobState
from prism.schema.identity import ApiToken, User


@strawberry.type(description="One audited change, chained to the previous one by hash.")
class AuditEvent(Node):
    event_type: str
    category: str
    description: str
    resource_type: str | None
    resource_id: strawberry.ID | None
    before: JSON | None
    after: JSON | None
    ip_address: str | None
    user_agent: str | None
    request_id: str | None
    created_at: datetime
    hash: str = strawberry.field(
        description="Hash chain: sha256 over the previous event's hash and this event's "
        "canonical form."
    )
    prev_hash: str | None
    row: strawberry.Private[audit_models.AuditEvent]

    @classmethod
    def from_row(cls, row: audit_models.AuditEvent) -> AuditEvent:
        resource_id = (
            strawberry.ID(to_global_id(row.resource_type, row.resource_id))
            if row.resource_id and row.resource_type
            else None
        )
        return cls(
            id=strawberry.ID(to_global_id("AuditEvent", row.id)),
            event_type=row.event_type,
            category=row.category,
            description=row.description,
            resource_type=row.resource_type,
            resource_id=resource_id,
            before=cast(JSON, row.before),
            after=cast(JSON, row.after),
            ip_address=str(row.ip_address) if row.ip_address else None,
            user_agent=row.user_agent,
            request_id=row.request_id,
            created_at=row.created_at,
            hash=row.hash,
            prev_hash=row.prev_hash,
            row=row,
        )

    @strawberry.field(description="The user who made the change.")
    async def actor(self, info: Info) -> User | None:
        if self.row.actor_id is None:
            return None
        row = await info.context.loaders.user.load(self.row.actor_id)
        return User.from_row(row) if row else None

    @strawberry.field(description="The API token the change was made with.")
    async def api_token(self, info: Info) -> ApiToken | None:
        if self.row.api_token_id is None:
            return None
        row = await info.context.loaders.api_token.load(self.row.api_token_id)
        principal = info.context.require_principal()
        if row is None or not may_read_token(principal, row.user_id, row.created_by):
            return None
        return ApiToken.from_row(row)


@strawberry.type
class AuditEventEdge(Edge):
    node: AuditEvent


@strawberry.type(description="A page of audit events, oldest first.")
class AuditEventConnection:
    edges: list[AuditEventEdge]
    page_info: PageInfo

    @classmethod
    def from_page(cls, page: Page[audit_models.AuditEvent]) -> AuditEventConnection:
        return cls(
            edges=edges_of(page, AuditEvent.from_row, AuditEventEdge),
            page_info=PageInfo.from_page(page),
        )


@strawberry.type(description="A background job (extraction, analysis, indexing, ...).")
class Job(Node):
    kind: str
    state: JobState = strawberry.field(
        description="FAILED: retried after a backoff; DEAD: gave up after `maxAttempts` (or on "
        "an error retrying cannot fix) and waits for an operator (`prism jobs retry`)."
    )
    attempts: int
    max_attempts: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    run_at: datetime = strawberry.field(description="When it may run (next).")
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: job_models.Job) -> Job:
        return cls(
            id=strawberry.ID(to_global_id("Job", row.id)),
            kind=row.kind,
            state=row.state,
            attempts=row.attempts,
            max_attempts=row.max_attempts,
            last_error=row.last_error,
            created_at=row.created_at,
            updated_at=row.updated_at,
            run_at=row.run_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
        )


@strawberry.type
class JobEdge(Edge):
    node: Job


@strawberry.type(description="A page of jobs, newest first.")
class JobConnection:
    edges: list[JobEdge]
    page_info: PageInfo

    @classmethod
    def from_page(cls, page: Page[job_models.Job]) -> JobConnection:
        return cls(edges=edges_of(page, Job.from_row, JobEdge), page_info=PageInfo.from_page(page))


@strawberry.type(description="The result of re-verifying the audit hash chain.")
class AuditChainReport:
    checked: int = strawberry.field(description="Events verified.")
    valid: bool = strawberry.field(description="False when any event was altered or removed.")
    first_broken_id: strawberry.ID | None = strawberry.field(
        description="The first event whose hash or link does not verify."
    )

    @classmethod
    def from_report(cls, report: audit_models.ChainReport) -> AuditChainReport:
        broken = report.first_broken_id
        return cls(
            checked=report.checked,
            valid=report.valid,
            first_broken_id=strawberry.ID(to_global_id("AuditEvent", broken)) if broken else None,
        )


@strawberry.input(description="Narrows the audit log.")
class AuditFilter:
    event_type: list[str] | None = None
    resource_id: strawberry.ID | None = None
    actor_id: strawberry.ID | None = strawberry.field(default=None, description="A User ID.")
    after: datetime | None = None
    before: datetime | None = None

    def to_model(self) -> audit_models.AuditFilter:
        return audit_models.AuditFilter(
            event_type=self.event_type,
            resource_id=_any_row_id(self.resource_id),
            actor_id=expect_id(self.actor_id, "User") if self.actor_id else None,
            after=self.after,
            before=self.before,
        )


def _any_row_id(global_id: strawberry.ID | None) -> uuid.UUID | None:
    return None if global_id is None else from_global_id(global_id)[1]


@strawberry.type
class AuditQuery:
    """``auditLog`` and ``verifyAuditChain`` of the root Query."""

    @strawberry.field(description="The organization's audit log, oldest first (ADMIN, AUDITOR).")
    async def audit_log(
        self,
        info: Info,
        filter: AuditFilter | None = None,
        first: First = None,
        after: After = None,
    ) -> AuditEventConnection:
        page = await audit_resolvers.read_audit_log(info.context, filter, first, after)
        return AuditEventConnection.from_page(page)

    @strawberry.field(
        description="Re-verify the organization's audit hash chain (ADMIN, AUDITOR), optionally "
        "within [after, before)."
    )
    async def verify_audit_chain(
        self, info: Info, after: datetime | None = None, before: datetime | None = None
    ) -> AuditChainReport:
        report = await audit_resolvers.verify_audit_chain(info.context, after, before)
        return AuditChainReport.from_report(report)


@strawberry.input(description="Narrows the job list; all given conditions must hold.")
class JobFilter:
    state: list[JobState] | None = None
    kind: list[str] | None = strawberry.field(
        default=None, description="e.g. gdpr.erase_cleanup, document.analyze."
    )


@strawberry.type
class JobQuery:
    """``job`` and ``jobs`` of the root Query."""

    @strawberry.field(description="A background job.")
    async def job(self, info: Info, id: strawberry.ID) -> Job | None:
        return Job.from_row(await job_resolvers.read_job(info.context, id))

    @strawberry.field(
        description="The organization's background jobs, newest first (ADMIN). "
        "`filter: {state: [DEAD]}` lists the jobs that gave up: what they should have done "
        "is not done (an erasure's cleanup, an index update, ...)."
    )
    async def jobs(
        self,
        info: Info,
        filter: JobFilter | None = None,
        first: First = None,
        after: After = None,
    ) -> JobConnection:
        flt = job_models.JobFilter(
            states=filter.state if filter else None, kinds=filter.kind if filter else None
        )
        page = await job_resolvers.read_jobs(info.context, flt, first, after)
        return JobConnection.from_page(page)
