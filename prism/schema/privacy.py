"""Data governance: personal-data exports and erasure receipts; the privacy fields of the
root Query (erasure status) and Mutation (export, erasure)."""

from __future__ import annotations

from datetime import datetime

import strawberry

from prism.execution.ids import expect_id, to_global_id
from prism.models import exports as export_models
from prism.models import jobs as job_models
from prism.models import users as user_models
from prism.models.base import utcnow
from prism.models.enums import JobState as JobStateValue
from prism.resolvers import privacy as privacy_resolvers
from prism.resolvers.privacy import Erasure, cleanup_complete
from prism.schema.audit import Job
from prism.schema.base import Info, Node
from prism.schema.enums import JobState
from prism.schema.identity import User


@strawberry.type(
    description="A bundle of one person's data (profile, feedback, audit events about them, "
    "the documents they uploaded with their files), built by a job."
)
class DataExport(Node):
    created_at: datetime
    expires_at: datetime | None = strawberry.field(
        description="When the download link stops working."
    )
    row: strawberry.Private[export_models.DataExport]

    @classmethod
    def from_row(cls, row: export_models.DataExport) -> DataExport:
        return cls(
            id=strawberry.ID(to_global_id("DataExport", row.id)),
            created_at=row.created_at,
            expires_at=row.expires_at,
            row=row,
        )

    @strawberry.field(description="Whose data it is (null once they are erased).")
    async def subject(self, info: Info) -> User | None:
        if self.row.subject_id is None:
            return None
        row = await info.context.loaders.user.load(self.row.subject_id)
        return User.from_row(row) if row else None

    @strawberry.field(description="QUEUED, RUNNING, SUCCEEDED; FAILED while retried, DEAD.")
    async def state(self, info: Info) -> JobState:
        if self.row.state in (JobStateValue.QUEUED, JobStateValue.RUNNING) and self.row.job_id:
            job = await info.context.loaders.job.load(self.row.job_id)
            if job is not None and job.state in (JobStateValue.FAILED, JobStateValue.DEAD):
                return job.state
        return self.row.state

    @strawberry.field(
        description="Signed link to the bundle (a zip), served decrypted by Prism; null until "
        "the bundle is ready and after it expires. Anyone holding it can download: share it "
        "like a password."
    )
    def download_url(self, info: Info) -> str | None:
        row = self.row
        if row.state is not JobStateValue.SUCCEEDED or row.expires_at is None:
            return None
        if row.expires_at <= utcnow():
            return None
        path = info.context.services.export_links.path(row.organization_id, row.id, row.expires_at)
        request = info.context.request
        base = str(request.base_url).rstrip("/") if request is not None else ""
        return base + path


@strawberry.type(description="What `eraseUser` did; also recorded as an audit event.")
class ErasureReceipt:
    subject_id: strawberry.ID
    erased_at: datetime
    documents_deleted: int
    documents_kept_for_legal_hold: int
    audit_event_id: strawberry.ID = strawberry.field(
        description="The `user.erase` audit event: the receipt in the hash chain."
    )
    audit_events_retained: int = strawberry.field(
        description="Audit events kept that concern the person (acted by them, or naming "
        "them in their text): the log is append-only and hash-chained."
    )
    retained: list[str] = strawberry.field(description="What was kept of the person, and why.")
    cleanup_complete: bool = strawberry.field(
        description="False until the cleanup job (stored files, lake partitions, search "
        "index) has SUCCEEDED: always false in the `eraseUser` answer; follow it with "
        "`erasureStatus`."
    )
    cleanup_jobs: list[Job] = strawberry.field(
        description="The cleanup job(s): DEAD means personal data may remain outside the "
        "database until an operator retries it (`prism jobs retry`)."
    )

    @classmethod
    def from_erasure(cls, erasure: Erasure) -> ErasureReceipt:
        assert erasure.audit_event_id is not None
        jobs = [erasure.cleanup_job] if erasure.cleanup_job else []
        return cls(
            cleanup_complete=cleanup_complete(jobs),
            cleanup_jobs=[Job.from_row(j) for j in jobs],
            subject_id=strawberry.ID(to_global_id("User", erasure.subject_id)),
            erased_at=erasure.erased_at,
            documents_deleted=erasure.documents_deleted,
            documents_kept_for_legal_hold=erasure.documents_kept_for_legal_hold,
            audit_event_id=strawberry.ID(to_global_id("AuditEvent", erasure.audit_event_id)),
            audit_events_retained=erasure.audit_events_retained,
            retained=erasure.retained,
        )


@strawberry.type(description="Where a person's erasure stands (ADMIN).")
class ErasureStatus:
    subject_id: strawberry.ID
    erased_at: datetime
    cleanup_complete: bool = strawberry.field(
        description="True once every cleanup job has SUCCEEDED and no document of the "
        "person is still kept for a legal hold: nothing of the person is left in stored "
        "files, the lake or the search index."
    )
    cleanup_jobs: list[Job] = strawberry.field(description="Oldest first.")

    @classmethod
    def from_rows(
        cls, subject: user_models.User, jobs: list[job_models.Job], held: int = 0
    ) -> ErasureStatus:
        assert subject.erased_at is not None
        return cls(
            subject_id=strawberry.ID(to_global_id("User", subject.id)),
            erased_at=subject.erased_at,
            cleanup_complete=cleanup_complete(jobs, held),
            cleanup_jobs=[Job.from_row(j) for j in jobs],
        )


@strawberry.type
class PrivacyQuery:
    """``erasureStatus`` of the root Query."""

    @strawberry.field(
        description="Where a person's erasure stands: whether its cleanup (stored files, "
        "lake, search index) is complete, and its jobs (ADMIN). Null if the user was never "
        "erased."
    )
    async def erasure_status(self, info: Info, user_id: strawberry.ID) -> ErasureStatus | None:
        found = await privacy_resolvers.erasure_status(info.context, expect_id(user_id, "User"))
        return ErasureStatus.from_rows(*found) if found else None


@strawberry.type
class PrivacyMutation:
    """``exportUserData`` and ``eraseUser`` of the root Mutation."""

    @strawberry.mutation(
        description="Export a person's data (GDPR access): a job builds an encrypted bundle "
        "with an expiring download link. The person themself or an ADMIN."
    )
    async def export_user_data(self, info: Info, user_id: strawberry.ID) -> DataExport:
        row = await privacy_resolvers.export_user_data(info.context, expect_id(user_id, "User"))
        return DataExport.from_row(row)

    @strawberry.mutation(
        description="Erase a person (GDPR): identity pseudonymized, documents deleted unless "
        "under legal hold, sessions and tokens revoked; the receipt is an audit event (ADMIN, "
        "signed-in session only; cannot be undone)."
    )
    async def erase_user(self, info: Info, user_id: strawberry.ID) -> ErasureReceipt:
        erasure = await privacy_resolvers.erase_user(info.context, expect_id(user_id, "User"))
        return ErasureReceipt.from_erasure(erasure)
