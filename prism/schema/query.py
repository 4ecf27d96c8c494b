"""The root Query."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Annotated

import strawberry

from prism.authz.policy import Action, may_read_token, require
from prism.errors import BadUserInput, NotFound, PrismError
from prism.execution.ids import expect_id, from_global_id
from prism.execution.prefetch import prefetch_documents, under
from prism.models import audit as audit_models
from prism.models import documents as document_models
from prism.models import jobs as job_models
from prism.models import users as user_models
from prism.models.pagination import MAX_PAGE_SIZE, PageRequest
from prism.resolvers import access
from prism.resolvers import governance as governance_resolvers
from prism.resolvers import privacy as governance_data_resolvers
from prism.resolvers import search as search_resolvers
from prism.resolvers.nodes import load_node
from prism.schema.audit import (
    AuditChainReport,
    AuditEvent,
    AuditEventConnection,
    Job,
    JobConnection,
)
from prism.schema.base import Info, Node
from prism.schema.bi import BiQuery
from prism.schema.documents import (
    Analysis,
    Document,
    DocumentConnection,
    Feedback,
    Section,
)
from prism.schema.enums import (
    Classification,
    DocumentOrderField,
    DocumentType,
    JobState,
    OrderDirection,
    ProcessingStatus,
    RiskLevel,
)
from prism.schema.governance import DataQualityReport, RetentionPolicy
from prism.schema.identity import ApiToken, Organization, User, UserConnection, Viewer
from prism.schema.privacy import DataExport, ErasureStatus
from prism.schema.search import SearchConnection, SearchFilter
from prism.search.types import MAX_QUERY_LENGTH

First = Annotated[
    int | None, strawberry.argument(description=f"Page size (0-{MAX_PAGE_SIZE}, default 20).")
]
After = Annotated[str | None, strawberry.argument(description="`endCursor` of the previous page.")]

NODE_TYPES = {
    "Organization": Organization,
    "User": User,
    "ApiToken": ApiToken,
    "Document": Document,
    "Section": Section,
    "Analysis": Analysis,
    "Feedback": Feedback,
    "AuditEvent": AuditEvent,
    "Job": Job,
    "DataExport": DataExport,
}


@strawberry.input(description="Narrows a document list; all given conditions must hold.")
class DocumentFilter:
    processing_status: list[ProcessingStatus] | None = None
    classification: list[Classification] | None = None
    document_type: list[DocumentType] | None = None
    risk_level: list[RiskLevel] | None = None
    uploaded_by: strawberry.ID | None = strawberry.field(default=None, description="A User ID.")
    created_after: datetime | None = None
    created_before: datetime | None = None
    legal_hold: bool | None = None

    def to_model(self) -> document_models.DocumentFilter:
        return document_models.DocumentFilter(
            processing_status=self.processing_status,
            classification=self.classification,
            document_type=self.document_type,
            risk_level=self.risk_level,
            uploaded_by=expect_id(self.uploaded_by, "User") if self.uploaded_by else None,
            created_after=self.created_after,
            created_before=self.created_before,
            legal_hold=self.legal_hold,
        )


@strawberry.input(description="How to order a document list (ties broken by ID).")
class DocumentOrder:
    field: DocumentOrderField
    direction: OrderDirection


@strawberry.input(description="Narrows the audit log.")
class AuditFilter:
    event_type: list[str] | None = None
    resource_id: strawberry.ID | None = None
    actor_id: strawberry.ID | None = strawberry.field(default=None, description="A User ID.")
    after: datetime | None = None
    before: datetime | None = None


@strawberry.input(description="Narrows the job list; all given conditions must hold.")
class JobFilter:
    state: list[JobState] | None = None
    kind: list[str] | None = strawberry.field(
        default=None, description="e.g. gdpr.erase_cleanup, document.analyze."
    )


@strawberry.type(description="A decision of the access policy.")
class AccessExplanation:
    allowed: bool
    code: str = strawberry.field(description="OK, or the error code a refusal gets.")
    reason: str


@strawberry.type
class Query(BiQuery):
    @strawberry.field(description="Any object by its global ID.")
    async def node(self, info: Info, id: strawberry.ID) -> Node | None:
        type_name, row = await load_node(info.context, id)
        return NODE_TYPES[type_name].from_row(row)  # type: ignore[attr-defined, no-any-return]

    @strawberry.field(
        description=f"Several objects by global ID (at most {MAX_PAGE_SIZE}); "
        "a missing one is null with a NOT_FOUND error at its index."
    )
    async def nodes(self, info: Info, ids: list[strawberry.ID]) -> list[Node | None]:
        if len(ids) > MAX_PAGE_SIZE:
            raise BadUserInput(f"At most {MAX_PAGE_SIZE} ids.", argument="ids")
        # Loaded together, so the loaders batch them: one statement per type, not per id.
        loaded = await asyncio.gather(
            *(load_node(info.context, global_id) for global_id in ids), return_exceptions=True
        )
        result: list[Node | None] = []
        for item in loaded:
            if isinstance(item, PrismError):
                # graphql-core reports an Exception in a list as that item's error.
                result.append(item)  # type: ignore[arg-type]
            elif isinstance(item, BaseException):
                raise item
            else:
                type_name, row = item
                result.append(NODE_TYPES[type_name].from_row(row))  # type: ignore[attr-defined]
        return result

    @strawberry.field(description="The caller.")
    def viewer(self, info: Info) -> Viewer:
        principal = info.context.require_principal()
        return Viewer(scopes=sorted(principal.granted_scopes))

    @strawberry.field(description="Documents the caller may see, filtered, ordered and paged.")
    async def documents(
        self,
        info: Info,
        filter: DocumentFilter | None = None,
        order_by: DocumentOrder | None = None,
        first: First = None,
        after: After = None,
    ) -> DocumentConnection:
        principal = info.context.require_principal()
        require(principal, Action.DOCUMENT_READ)
        field = order_by.field.value if order_by else "CREATED_AT"
        descending = order_by.direction is OrderDirection.DESC if order_by else True
        page_request = PageRequest.parse(
            first,
            after,
            ordering=f"documents:{field}:{'desc' if descending else 'asc'}",
            descending=descending,
        )
        flt = filter.to_model() if filter else None
        async with info.context.transaction.read() as session:
            page = await document_models.read_documents(
                session, principal.scope(), flt=flt, page=page_request, ordering=field
            )
        await prefetch_documents(
            info.context, page.items, under(info.selected_fields[0].selections, "edges", "node")
        )
        return DocumentConnection.from_page(page, flt)

    @strawberry.field(description="One document; NOT_FOUND if it does not exist or is not visible.")
    async def document(self, info: Info, id: strawberry.ID) -> Document | None:
        principal = info.context.require_principal()
        require(principal, Action.DOCUMENT_READ)
        row = await info.context.loaders.document.load(expect_id(id, "Document"))
        if row is None:
            raise NotFound("Document not found.")
        return Document.from_row(row)

    @strawberry.field(description="Users of the caller's organization (ADMIN, AUDITOR).")
    async def users(self, info: Info, first: First = None, after: After = None) -> UserConnection:
        principal = info.context.require_principal()
        require(principal, Action.USER_LIST)
        page_request = PageRequest.parse(first, after, ordering="users")
        async with info.context.transaction.read() as session:
            page = await user_models.read_users(
                session, organization_id=principal.organization_id, page=page_request
            )
        return UserConnection.from_page(page)

    @strawberry.field(
        description="API tokens: the caller's own, or all of the organization's for ADMIN "
        "and AUDITOR."
    )
    async def api_tokens(self, info: Info) -> list[ApiToken]:
        principal = info.context.require_principal()
        all_of_them = may_read_token(principal, None, None)
        async with info.context.transaction.read() as session:
            rows = await user_models.read_api_tokens(
                session,
                organization_id=principal.organization_id,
                user_id=None if all_of_them else principal.user_id,
            )
        if not all_of_them and principal.user_id is None:
            rows = [r for r in rows if r.id == principal.api_token_id]
        return [ApiToken.from_row(r) for r in rows]

    @strawberry.field(description="The organization's audit log, oldest first (ADMIN, AUDITOR).")
    async def audit_log(
        self,
        info: Info,
        filter: AuditFilter | None = None,
        first: First = None,
        after: After = None,
    ) -> AuditEventConnection:
        principal = info.context.require_principal()
        require(principal, Action.AUDIT_READ)
        page_request = PageRequest.parse(first, after, ordering="audit")
        flt = None
        if filter is not None:
            flt = audit_models.AuditFilter(
                event_type=filter.event_type,
                resource_id=_any_row_id(filter.resource_id),
                actor_id=expect_id(filter.actor_id, "User") if filter.actor_id else None,
                after=filter.after,
                before=filter.before,
            )
        async with info.context.transaction.read() as session:
            page = await audit_models.read_audit_events(
                session, principal.scope(), flt=flt, page=page_request
            )
        return AuditEventConnection.from_page(page)

    @strawberry.field(
        description="Re-verify the organization's audit hash chain (ADMIN, AUDITOR), optionally "
        "within [after, before)."
    )
    async def verify_audit_chain(
        self, info: Info, after: datetime | None = None, before: datetime | None = None
    ) -> AuditChainReport:
        principal = info.context.require_principal()
        require(principal, Action.AUDIT_READ)
        # The chain spans every event of the organization, whatever the reader's clearance;
        # the report names at most one event id, never its content.
        async with info.context.services.db.transaction(principal.organization_id) as session:
            report = await audit_models.verify_chain(
                session, organization_id=principal.organization_id, after=after, before=before
            )
        return AuditChainReport.from_report(report)

    @strawberry.field(
        description="Why a user or API token may or may not do an action, optionally on a "
        "document: the answer of the same policy function every request goes through (ADMIN)."
    )
    async def explain_access(
        self,
        info: Info,
        principal_id: Annotated[
            strawberry.ID, strawberry.argument(description="A User or ApiToken ID.")
        ],
        action: Annotated[
            str, strawberry.argument(description="e.g. document:read, feedback:review.")
        ],
        resource_id: Annotated[
            strawberry.ID | None, strawberry.argument(description="A Document ID.")
        ] = None,
    ) -> AccessExplanation:
        _, decision = await access.explain(info.context, principal_id, action, resource_id)
        return AccessExplanation(
            allowed=decision.allowed, code=decision.code, reason=decision.reason
        )

    @strawberry.field(
        description="Full-text search over the sections the caller may read (`search:read`), "
        "best first. `query` follows web-search syntax: words must all match, "
        '`"a phrase"` in order, `OR` between two terms either, `-word` excludes. '
        "Personal data is masked in what is searched and shown."
    )
    async def search(
        self,
        info: Info,
        query: Annotated[
            str, strawberry.argument(description=f"1 to {MAX_QUERY_LENGTH} characters.")
        ],
        filter: SearchFilter | None = None,
        first: First = None,
        after: After = None,
    ) -> SearchConnection:
        filters = filter.to_filters() if filter else None
        found = await search_resolvers.search(info.context, query, filters, first, after)
        return SearchConnection.from_found(found)

    @strawberry.field(description="A background job.")
    async def job(self, info: Info, id: strawberry.ID) -> Job | None:
        principal = info.context.require_principal()
        require(principal, Action.JOB_READ)
        row = await info.context.loaders.job.load(expect_id(id, "Job"))
        if row is None:
            raise NotFound("Job not found.")
        return Job.from_row(row)

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
        principal = info.context.require_principal()
        require(principal, Action.JOB_ADMIN)
        flt = job_models.JobFilter(
            states=filter.state if filter else None, kinds=filter.kind if filter else None
        )
        page_request = PageRequest.parse(first, after, ordering="jobs", descending=True)
        async with info.context.transaction.read() as session:
            page = await job_models.read_jobs(
                session, principal.organization_id, flt=flt, page=page_request
            )
        return JobConnection.from_page(page)

    @strawberry.field(
        description="Where a person's erasure stands: whether its cleanup (stored files, "
        "lake, search index) is complete, and its jobs (ADMIN). Null if the user was never "
        "erased."
    )
    async def erasure_status(self, info: Info, user_id: strawberry.ID) -> ErasureStatus | None:
        found = await governance_data_resolvers.erasure_status(
            info.context, expect_id(user_id, "User")
        )
        return ErasureStatus.from_rows(*found) if found else None

    @strawberry.field(
        description="The organization's retention policy of every data category (ADMIN)."
    )
    async def retention_policies(self, info: Info) -> list[RetentionPolicy]:
        rows = await governance_resolvers.retention_policies(info.context)
        return [RetentionPolicy.from_row(r) for r in rows]

    @strawberry.field(
        description="The latest data-quality assessment (ADMIN, AUDITOR); null before the "
        "first one."
    )
    async def data_quality_report(self, info: Info) -> DataQualityReport | None:
        row = await governance_resolvers.data_quality_report(info.context)
        return DataQualityReport.from_row(row) if row else None


def _any_row_id(global_id: strawberry.ID | None) -> uuid.UUID | None:
    return None if global_id is None else from_global_id(global_id)[1]
