"""BI aggregates: every rollup equals a direct aggregate over the base tables after random
inserts, updates and deletes (property-based); the GraphQL fields answer those numbers for
the caller's organization only and only within its clearance; typed errors for bad ranges;
the refresh runs as a job."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from prism import bootstrap, demo
from prism.audit import OPERATOR
from prism.authz.principal import Principal
from prism.bi import refresh as bi_refresh
from prism.db import migrations
from prism.db.engine import Database, create_engine
from prism.demo import scale as scale_corpus
from prism.documents.processing import store_analysis
from prism.identity import organizations as identity_organizations
from prism.identity import users as identity_users
from prism.jobs.worker import Worker
from prism.models.analyses import Analysis
from prism.models.audit import AuditEvent, verify_chain
from prism.models.base import utcnow
from prism.models.bi import reads as bi_models
from prism.models.bi import refresh as bi_rollups
from prism.models.documents import Document, Section
from prism.models.enums import (
    Classification,
    DocumentType,
    FeedbackAction,
    JobState,
    ProcessingStatus,
    RiskLevel,
    Role,
    WorkflowStatus,
)
from prism.models.feedback import Feedback
from prism.models.jobs import Job
from prism.services import Services
from prism.tokens import api_tokens
from tests import bi_oracle as oracle
from tests.conftest import NewDatabase
from tests.factories import (
    PASSWORD,
    Tenant,
    add_document,
    add_user,
    codes,
    gid,
    gql,
    make_tenant,
)
from tests.test_persisted import _call, _register

DEPARTMENTS = ["legal", "hr", None]
MODELS = ["rules", "anthropic.claude-3-5-haiku"]
CATEGORIES = ["LIABILITY", "PRIVACY", "READABILITY"]
EVENT_CATEGORIES = ["review", "data_change", "authentication"]
DAYS = 40


def today() -> date:
    return datetime.now(UTC).date()


async def refresh(services: Services, *organizations: uuid.UUID) -> None:
    for organization_id in organizations:
        await bi_refresh.refresh_organization(services.db, organization_id)


def principal(
    organization_id: uuid.UUID,
    role: Role,
    clearance: Classification,
    department: str | None,
    user_id: uuid.UUID | None = None,
) -> Principal:
    return Principal(
        organization_id=organization_id,
        user_id=user_id,
        api_token_id=None,
        role=role,
        clearance=clearance,
        department=department,
        scopes=None,
    )


# --- random changes, folded incrementally, against the base rows --------------------------------


class World:
    """One organization that random changes are made to, each in a transaction of its own
    (or a few together), through the app role as any request or job would."""

    def __init__(self, services: Services, org: uuid.UUID, users: list[uuid.UUID], seed: int):
        self.services, self.org, self.users = services, org, users
        self.rng = random.Random(seed)

    def moment(self) -> datetime:
        # many days: a change whose slice was not marked is rarely hidden by another's mark
        day = today() - timedelta(days=self.rng.randrange(DAYS))
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return midnight + timedelta(seconds=self.rng.randrange(86_400))

    async def pick(self, session: AsyncSession, column: Any, *where: Any) -> Any:
        found = list(await session.scalars(sa.select(column).where(*where).order_by(column)))
        return self.rng.choice(found) if found else None

    async def document(self, s: AsyncSession) -> None:
        r = self.rng
        s.add(
            Document(
                organization_id=self.org,
                uploaded_by=r.choice(self.users),
                department=r.choice(DEPARTMENTS),
                filename="random.txt",
                mime_type="text/plain",
                file_size=1,
                sha256=uuid.uuid4().hex * 2,
                document_type=r.choice(list(DocumentType)),
                classification=r.choice(list(Classification)),
                processing_status=r.choice(
                    [ProcessingStatus.COMPLETED] * 3 + [ProcessingStatus.FAILED]
                ),
                risk_level=r.choice([None, *RiskLevel]),
                created_at=self.moment(),
            )
        )

    async def analyses(self, s: AsyncSession) -> None:
        r = self.rng
        document_id = await self.pick(s, Document.id)
        if document_id is None:
            return
        last = await s.scalar(
            sa.select(sa.func.max(Section.ord)).where(Section.document_id == document_id)
        )
        for n in range(r.randrange(1, 4)):
            section = Section(
                organization_id=self.org,
                document_id=document_id,
                ord=(last if last is not None else -1) + 1 + n,
                name="s",
                content="c",
            )
            s.add(section)
            await s.flush()
            when = self.moment()
            # As the pipeline stores it: a RESTRICTED document's findings are sealed.
            await store_analysis(
                s,
                {
                    "organization_id": self.org,
                    "document_id": document_id,
                    "section_id": section.id,
                    "model": r.choice(MODELS),
                    "started_at": when,
                    "completed_at": when,
                    "duration_seconds": r.uniform(0.01, 30),
                    "risk_level": r.choice([None, *RiskLevel]),
                    "confidence": r.choice([None, round(r.random(), 3)]),
                    "tokens_used": r.randrange(5_000),
                    "cost_usd": Decimal(r.randrange(100_000)) / Decimal(1_000_000),
                    "feedback_items": [
                        {"id": str(i), "category": r.choice(CATEGORIES)}
                        for i in range(r.randrange(4))
                    ],
                },
                None,
                envelope=self.services.envelope,
            )

    async def feedback(self, s: AsyncSession) -> None:
        r = self.rng
        analysis_id = await self.pick(s, Analysis.id)
        if analysis_id is None:
            return
        analysis = await s.get(Analysis, analysis_id)
        assert analysis is not None
        item = r.choice([None, *analysis.feedback_items])
        s.add(
            Feedback(
                organization_id=self.org,
                document_id=analysis.document_id,
                section_id=analysis.section_id,
                analysis_id=analysis.id,
                user_id=r.choice([*self.users, None]),
                item_id=item["id"] if item else None,
                category=item["category"] if item else None,
                action=r.choice(list(FeedbackAction)),
                rating=r.choice([None, 1, 2, 3, 4, 5]),
                workflow_status=WorkflowStatus.SUBMITTED,
                created_at=self.moment(),
            )
        )

    async def review(self, s: AsyncSession) -> None:
        feedback_id = await self.pick(s, Feedback.id)
        if feedback_id is not None:
            await s.execute(
                sa.update(Feedback)
                .where(Feedback.id == feedback_id)
                .values(
                    workflow_status=self.rng.choice(
                        [WorkflowStatus.APPROVED, WorkflowStatus.REJECTED]
                    ),
                    approved_by=self.rng.choice(self.users),
                    approved_at=utcnow(),
                )
            )

    async def rate(self, s: AsyncSession) -> None:
        feedback_id = await self.pick(s, Feedback.id)
        if feedback_id is not None:
            rating = self.rng.choice([None, 1, 4, 5])
            await s.execute(
                sa.update(Feedback).where(Feedback.id == feedback_id).values(rating=rating)
            )

    async def reclassify(self, s: AsyncSession) -> None:
        # As updateDocument does: the new level seals or unseals the findings.
        document_id = await self.pick(s, Document.id)
        document = await s.get(Document, document_id) if document_id else None
        if document is None:
            return
        document.classification = self.rng.choice(list(Classification))
        document.department = self.rng.choice(DEPARTMENTS)
        await s.flush()
        await self.services.envelope.apply_classification(s, document)

    async def retype(self, s: AsyncSession) -> None:
        await self._change_document(s, document_type=self.rng.choice(list(DocumentType)))

    async def finish(self, s: AsyncSession) -> None:
        await self._change_document(
            s,
            processing_status=self.rng.choice(list(ProcessingStatus)),
            risk_level=self.rng.choice([None, *RiskLevel]),
        )

    async def soft_delete(self, s: AsyncSession) -> None:
        await self._change_document(s, Document.deleted_at.is_(None), deleted_at=utcnow())

    async def hard_delete(self, s: AsyncSession) -> None:
        document_id = await self.pick(s, Document.id)
        if document_id is not None:
            await s.execute(sa.delete(Document).where(Document.id == document_id))

    async def reextract(self, s: AsyncSession) -> None:
        # what store_sections does: earlier sections go, their analyses and feedback with them
        document_id = await self.pick(s, Document.id)
        if document_id is not None:
            await s.execute(sa.delete(Section).where(Section.document_id == document_id))

    async def event(self, s: AsyncSession) -> None:
        r = self.rng
        s.add(
            AuditEvent(
                id=uuid.uuid4(),
                created_at=self.moment(),
                organization_id=self.org,
                actor_id=r.choice(self.users),
                event_type="test.event",
                category=r.choice(EVENT_CATEGORIES),
                description="activity",
                classification=r.choice([None, *Classification]),
                department=r.choice(DEPARTMENTS),
                hash="0" * 64,  # the hash chain is not under test here
            )
        )

    async def _change_document(self, s: AsyncSession, *where: Any, **values: Any) -> None:
        document_id = await self.pick(s, Document.id, *where)
        if document_id is not None:
            await s.execute(sa.update(Document).where(Document.id == document_id).values(**values))

    async def refresh(self) -> None:
        await refresh(self.services, self.org)

    async def partial_refresh(self) -> None:
        async with self.services.db.transaction(self.org) as session:
            await bi_rollups.refresh_rollups(session, self.org, limit=1)

    async def run(self, transaction: list[str]) -> None:
        if transaction[0] in ("refresh", "partial_refresh"):
            await getattr(self, transaction[0])()
            return
        async with self.services.db.transaction(self.org) as session:
            for op in transaction:
                await getattr(self, op)(session)
                await session.flush()


WRITES = [
    "document",
    "analyses",
    "analyses",
    "feedback",
    "feedback",
    "review",
    "rate",
    "reclassify",
    "retype",
    "finish",
    "soft_delete",
    "hard_delete",
    "reextract",
    "event",
]
transactions = st.lists(
    st.one_of(
        st.lists(st.sampled_from(WRITES), min_size=1, max_size=3),
        st.sampled_from([["refresh"], ["partial_refresh"]]),
    ),
    min_size=1,
    max_size=18,
)
PROLOGUE = [
    ["document", "document", "analyses", "analyses"],
    ["analyses", "feedback", "feedback", "event"],
    ["refresh"],
]


async def _world(services: Services, seed: int) -> World:
    org = await identity_organizations.create_organization(
        services, OPERATOR, f"Bi {uuid.uuid4().hex[:8]}"
    )
    users = [
        (
            await identity_users.add_user(
                services,
                OPERATOR,
                org.id,
                email=f"u{n}-{uuid.uuid4().hex[:6]}@bi.test",
                password=PASSWORD,
                role=Role.REVIEWER,
                clearance=Classification.CONFIDENTIAL,
                department="legal",
            )
        ).id
        for n in range(3)
    ]
    return World(services, org.id, users, seed)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(changes=transactions, seed=st.integers(0, 2**32 - 1))
async def test_every_rollup_equals_the_base_aggregate_after_random_changes(
    services: Services, changes: list[list[str]], seed: int
) -> None:
    world = await _world(services, seed)
    # given random inserts, updates and deletes, with incremental refreshes in between
    for transaction in [*PROLOGUE, *changes]:
        await world.run(transaction)
    # when what is still stale is refreshed
    await world.refresh()
    # then every rollup row is what the base rows add up to
    base = await oracle.base_rows(services, world.org)
    oracle.assert_same_tables(
        await oracle.actual_rollups(services, world.org), oracle.expected_rollups(base)
    )
    # and every kind of reader gets the numbers of what it may see
    start, end = today() - timedelta(days=DAYS - 1), today()
    readers = [
        principal(world.org, Role.ADMIN, Classification.RESTRICTED, "legal"),
        principal(world.org, Role.APPROVER, Classification.RESTRICTED, "legal"),
        principal(world.org, Role.APPROVER, Classification.RESTRICTED, None),
        principal(world.org, Role.AUDITOR, Classification.CONFIDENTIAL, "hr"),
        principal(world.org, Role.AUDITOR, Classification.INTERNAL, "legal"),
        principal(world.org, Role.APPROVER, Classification.PUBLIC, "legal"),
    ]
    async with services.db.transaction(world.org) as session:
        for reader in readers:
            scope = reader.scope()
            figures = await bi_models.read_executive_figures(session, scope, start=start, end=end)
            oracle.assert_close(
                oracle.executive_of(figures), oracle.expected_executive(base, reader, start, end)
            )
            days = await bi_models.read_daily_figures(session, scope, start=start, end=end)
            expected = oracle.expected_daily(base, reader, start, end)
            assert len(days) == len(expected)
            for got, want in zip(days, expected, strict=True):
                oracle.assert_close(oracle.daily_of(got), want)


# --- the GraphQL fields -----------------------------------------------------------------------

EXECUTIVE_FIELDS = """periodDays totalDocumentsProcessed totalActiveUsers
  averageProcessingTimeSeconds totalAiFeedbackItems averageUserSatisfaction
  totalProcessingCostUsd highRiskDocumentsCount documentsPerDay costPerDocument
  highRiskPercentage userProductivityScore"""
DAILY_FIELDS = """date totalAnalyses avgProcessingTimeSeconds totalCostUsd avgConfidence
  totalFeedbackItems satisfiedUsersCount"""
SUMMARIES = f"""query($days: Int, $from: Date!, $to: Date!) {{
  executiveSummary(periodDays: $days) {{ {EXECUTIVE_FIELDS} }}
  dailySummary(from: $from, to: $to) {{ {DAILY_FIELDS} }}
}}"""
ANALYSES = """query($id: ID!) { document(id: $id) {
  analyses(first: 100) { edges { node { id feedbackItems { id } } } } } }"""
SUBMIT = """mutation($input: SubmitFeedbackInput!) { submitFeedback(input: $input) { id } }"""
REVIEW = """mutation($id: ID!, $ok: Boolean!) {
  reviewFeedback(input: {id: $id, approve: $ok}) { id } }"""


async def _review_some(
    client: httpx.AsyncClient,
    tenant: Tenant,
    document: Document,
    rating: int,
    *,
    by: Role = Role.REVIEWER,
    approver: Role | None = Role.APPROVER,
) -> None:
    """``by`` rates each analysis of ``document``; ``approver`` approves the first rating."""
    body = await gql(
        client, ANALYSES, {"id": gid("Document", document.id)}, token=tenant.tokens[Role.ADMIN]
    )
    edges = body["data"]["document"]["analyses"]["edges"]
    submitted = []
    for edge in edges:
        items = edge["node"]["feedbackItems"]
        answer = await gql(
            client,
            SUBMIT,
            {
                "input": {
                    "analysisId": edge["node"]["id"],
                    "itemId": items[0]["id"] if items else None,
                    "action": "ACCEPTED" if items else "CUSTOM",
                    "customText": None if items else "Looks fine.",
                    "rating": rating,
                }
            },
            token=tenant.tokens[by],
        )
        assert answer.get("errors") is None, answer
        submitted.append(answer["data"]["submitFeedback"]["id"])
    if approver is not None:
        reviewed = await gql(
            client, REVIEW, {"id": submitted[0], "ok": True}, token=tenant.tokens[approver]
        )
        assert reviewed.get("errors") is None, reviewed


async def _summaries(client: httpx.AsyncClient, token: str, days: int = 7) -> dict[str, Any]:
    variables = {
        "days": days,
        "from": (today() - timedelta(days=days - 1)).isoformat(),
        "to": today().isoformat(),
    }
    body = await gql(client, SUMMARIES, variables, token=token)
    assert body.get("errors") is None, body
    return dict(body["data"])


async def _check_against_base(
    client: httpx.AsyncClient,
    services: Services,
    tenant: Tenant,
    token: str,
    reader: Principal,
) -> dict[str, Any]:
    await refresh(services, tenant.org_id)  # creating users and tokens was activity too
    answer = await _summaries(client, token)
    base = await oracle.base_rows(services, tenant.org_id)
    start, end = today() - timedelta(days=6), today()
    oracle.assert_close(
        answer["executiveSummary"], oracle.expected_executive(base, reader, start, end)
    )
    expected_days = oracle.expected_daily(base, reader, start, end)
    assert [d["date"] for d in answer["dailySummary"]] == [d["date"] for d in expected_days]
    for got, want in zip(answer["dailySummary"], expected_days, strict=True):
        oracle.assert_close(got, want)
    return answer


@pytest.fixture
async def reviewed(
    services: Services, client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> dict[str, Document]:
    """A document of every level (RESTRICTED in two departments), each reviewed, and a busy
    other organization."""
    documents = {
        "public": await add_document(services, tenant, classification=Classification.PUBLIC),
        "internal": await add_document(services, tenant, classification=Classification.INTERNAL),
        "confidential": await add_document(
            services, tenant, classification=Classification.CONFIDENTIAL
        ),
        "restricted-legal": await add_document(
            services, tenant, classification=Classification.RESTRICTED, department="legal"
        ),
        "restricted-hr": await add_document(
            services, tenant, classification=Classification.RESTRICTED, department="hr"
        ),
    }
    for name, document in documents.items():
        if "restricted" in name:  # only the ADMIN may see both; nobody else may review it
            await _review_some(client, tenant, document, 5, by=Role.ADMIN, approver=None)
        else:
            await _review_some(client, tenant, document, 3)
    for _ in range(3):
        theirs = await add_document(services, other_tenant, classification=Classification.PUBLIC)
        await _review_some(client, other_tenant, theirs, 4)
    await refresh(services, tenant.org_id, other_tenant.org_id)
    return documents


async def test_summaries_are_the_base_aggregates_of_what_the_caller_may_see(
    services: Services,
    client: httpx.AsyncClient,
    tenant: Tenant,
    reviewed: dict[str, Document],
) -> None:
    org = tenant.org_id
    admin = await _check_against_base(
        client,
        services,
        tenant,
        tenant.tokens[Role.ADMIN],
        principal(org, Role.ADMIN, Classification.RESTRICTED, "legal"),
    )
    internal_user, internal_token = await add_user(
        services, tenant, role=Role.AUDITOR, clearance=Classification.INTERNAL
    )
    internal = await _check_against_base(
        client,
        services,
        tenant,
        internal_token,
        principal(org, Role.AUDITOR, Classification.INTERNAL, "legal", internal_user.id),
    )
    hr_user, hr_token = await add_user(
        services, tenant, role=Role.APPROVER, clearance=Classification.RESTRICTED, department="hr"
    )
    hr = await _check_against_base(
        client,
        services,
        tenant,
        hr_token,
        principal(org, Role.APPROVER, Classification.RESTRICTED, "hr", hr_user.id),
    )
    # the numbers differ by clearance and department, and never include the other organization
    assert admin["executiveSummary"]["totalDocumentsProcessed"] == 5
    assert internal["executiveSummary"]["totalDocumentsProcessed"] == 2
    assert hr["executiveSummary"]["totalDocumentsProcessed"] == 4  # not legal's RESTRICTED one
    assert internal["executiveSummary"]["averageUserSatisfaction"] == 3.0
    assert (
        admin["executiveSummary"]["totalAiFeedbackItems"]
        > internal["executiveSummary"]["totalAiFeedbackItems"]
        > 0
    )
    assert sum(d["satisfiedUsersCount"] for d in admin["dailySummary"]) >= 1
    assert sum(d["satisfiedUsersCount"] for d in internal["dailySummary"]) == 0


async def test_reclassification_and_deletion_move_the_numbers(
    services: Services,
    client: httpx.AsyncClient,
    tenant: Tenant,
    reviewed: dict[str, Document],
) -> None:
    org = tenant.org_id
    auditor = principal(
        org, Role.AUDITOR, Classification.CONFIDENTIAL, "legal", tenant.users[Role.AUDITOR].id
    )
    admin = principal(org, Role.ADMIN, Classification.RESTRICTED, "legal")
    before = await _check_against_base(
        client, services, tenant, tenant.tokens[Role.AUDITOR], auditor
    )
    # when the CONFIDENTIAL document becomes RESTRICTED and the PUBLIC one is deleted
    admin_token = tenant.tokens[Role.ADMIN]
    changed = await gql(
        client,
        "mutation($id: ID!) { updateDocument(input: {id: $id, classification: RESTRICTED}) "
        "{ classification } }",
        {"id": gid("Document", reviewed["confidential"].id)},
        token=admin_token,
    )
    assert changed.get("errors") is None, changed
    deleted = await gql(
        client,
        "mutation($id: ID!) { deleteDocument(id: $id) { deletedId } }",
        {"id": gid("Document", reviewed["public"].id)},
        token=admin_token,
    )
    assert deleted.get("errors") is None, deleted
    await refresh(services, org)
    # then both readers' numbers follow, still equal to the base aggregates
    after = await _check_against_base(
        client, services, tenant, tenant.tokens[Role.AUDITOR], auditor
    )
    assert (
        after["executiveSummary"]["totalDocumentsProcessed"]
        == before["executiveSummary"]["totalDocumentsProcessed"] - 2
    )
    assert Decimal(after["executiveSummary"]["totalProcessingCostUsd"]) <= Decimal(
        before["executiveSummary"]["totalProcessingCostUsd"]
    )
    everything = await _check_against_base(client, services, tenant, admin_token, admin)
    assert everything["executiveSummary"]["totalDocumentsProcessed"] == 4


async def test_bi_needs_the_role_and_the_scope(
    services: Services, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    query = "{ executiveSummary { periodDays } }"
    for role in (Role.VIEWER, Role.REVIEWER):
        assert codes(await gql(client, query, token=tenant.tokens[role])) == ["FORBIDDEN"]
    for role in (Role.APPROVER, Role.AUDITOR, Role.ADMIN):
        body = await gql(client, query, token=tenant.tokens[role])
        assert body["data"] == {"executiveSummary": {"periodDays": 30}}, (role, body)
    assert codes(await gql(client, query)) == ["UNAUTHENTICATED"]
    # a BI tool: a service token with the bi:read scope only
    tool = await api_tokens.create_token(
        services,
        OPERATOR,
        tenant.org_id,
        name="grafana",
        scopes=["bi:read"],
        role=Role.AUDITOR,
        clearance=Classification.INTERNAL,
    )
    # ... which runs registered operations only
    assert codes(await gql(client, query, token=tool.secret)) == ["PERSISTED_QUERY_REQUIRED"]
    registered = await _register(services, "query Summary " + query)
    answer = await _call(client, tool.secret, registered["Summary"])
    assert answer["data"] == {"executiveSummary": {"periodDays": 30}}, answer
    # the scope is required even of an ADMIN's token
    narrow = await api_tokens.create_token(
        services,
        OPERATOR,
        tenant.org_id,
        name="documents only",
        scopes=["documents:read"],
        user_email=tenant.email(Role.ADMIN),
    )
    assert codes(await gql(client, query, token=narrow.secret)) == ["FORBIDDEN"]


BAD_INPUT = [
    ("{ executiveSummary(periodDays: 0) { periodDays } }", "periodDays"),
    ("{ executiveSummary(periodDays: 3651) { periodDays } }", "periodDays"),
    ('{ dailySummary(from: "2026-02-01", to: "2026-01-31") { date } }', "is after"),
    ('{ dailySummary(from: "2025-01-01", to: "2026-01-02") { date } }', "at most 366"),
    ('{ dailySummary(from: "2026-13-01", to: "2026-12-31") { date } }', "Date"),
    ('{ dailySummary(from: "yesterday", to: "2026-12-31") { date } }', "Date"),
    ('{ aiUsage(from: "2020-01-01", to: "2026-01-01", interval: DAY) { analyses } }', "366"),
    (
        '{ userActivity(from: "2026-01-01", to: "2026-03-01", interval: HOUR) { events } }',
        "at most 31",
    ),
    (
        '{ activityByHourOfDay(from: "2026-01-01", to: "2026-01-02", categories: ['
        + ", ".join(f'"c{i}"' for i in range(21))
        + "]) { events } }",
        "categories",
    ),
    (
        '{ riskDistribution(from: "2026-01-01", to: "2026-01-09", interval: WEEKLY) {'
        " documents } }",
        "WEEKLY",
    ),
]


@pytest.mark.parametrize(("query", "says"), BAD_INPUT)
async def test_bad_ranges_are_bad_user_input(
    client: httpx.AsyncClient, tenant: Tenant, query: str, says: str
) -> None:
    body = await gql(client, query, token=tenant.tokens[Role.ADMIN])
    assert codes(body) == ["BAD_USER_INPUT"], body
    assert says in body["errors"][0]["message"], body["errors"][0]["message"]


async def test_stale_rollups_are_refreshed_by_one_job_per_organization(
    services: Services, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await add_document(services, tenant, classification=Classification.PUBLIC)
    async with services.db.transaction(tenant.org_id) as session:
        assert await bi_rollups.pending_slices(session, tenant.org_id) > 0
    # scheduling twice queues one job for the organization
    assert await bi_refresh.schedule_refreshes(services.db, services.settings) >= 1
    await bi_refresh.schedule_refreshes(services.db, services.settings)
    async with services.db.transaction(tenant.org_id) as session:
        queued = list(await session.scalars(sa.select(Job).where(Job.kind == bi_refresh.REFRESH)))
    assert [j.state for j in queued] == [JobState.QUEUED]
    # a worker runs it: nothing stale is left and the numbers are there
    await Worker(services).drain()
    async with services.db.transaction(tenant.org_id) as session:
        job = await session.get(Job, queued[0].id)
        assert job is not None
        assert job.state is JobState.SUCCEEDED
        assert await bi_rollups.pending_slices(session, tenant.org_id) == 0
    body = await _summaries(client, tenant.tokens[Role.ADMIN])
    assert body["executiveSummary"]["totalDocumentsProcessed"] == 1
    assert sum(d["totalAnalyses"] for d in body["dailySummary"]) > 0


async def test_a_running_worker_keeps_the_rollups_fresh(services: Services, tenant: Tenant) -> None:
    settings = services.settings.model_copy(update={"bi_refresh_seconds": 0.2})
    worker_services = replace(services, settings=settings)
    await add_document(services, tenant, classification=Classification.INTERNAL)
    stop = asyncio.Event()
    running = asyncio.create_task(Worker(worker_services).run(stop, grace_seconds=5))
    try:
        for _ in range(100):
            async with services.db.transaction(tenant.org_id) as session:
                pending = await bi_rollups.pending_slices(session, tenant.org_id)
            if not pending:
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await running
    assert pending == 0
    reader = principal(tenant.org_id, Role.ADMIN, Classification.RESTRICTED, "legal")
    async with services.db.transaction(tenant.org_id) as session:
        figures = await bi_models.read_executive_figures(
            session, reader.scope(), start=today(), end=today()
        )
    assert figures.documents_processed == 1
    assert figures.analyses > 0


BREAKDOWNS = """query($from: Date!, $to: Date!) {
  aiUsage(from: $from, to: $to, interval: DAY, groupBy: [MODEL, CLASSIFICATION]) {
    periodStart model documentType classification analyses tokensUsed costUsd feedbackItems }
  totals: aiUsage(from: $from, to: $to, groupBy: []) { periodStart model analyses costUsd }
  riskDistribution(from: $from, to: $to) { periodStart documentType riskLevel documents }
  feedbackAcceptance(from: $from, to: $to, groupBy: [CATEGORY, MODEL]) {
    category model feedback accepted custom approvedInReview acceptanceRate averageRating }
  userActivity(from: $from, to: $to, interval: DAY) { periodStart events activeUsers }
  reviews: userActivity(from: $from, to: $to, categories: ["review"]) {
    periodStart events activeUsers }
  activityByHourOfDay(from: $from, to: $to) { hourOfDay events activeUsers }
}"""


async def test_breakdowns_are_the_base_aggregates_of_what_the_caller_may_see(
    services: Services,
    client: httpx.AsyncClient,
    tenant: Tenant,
    reviewed: dict[str, Document],
) -> None:
    start, end = today() - timedelta(days=6), today()
    variables = {"from": start.isoformat(), "to": end.isoformat()}
    base = await oracle.base_rows(services, tenant.org_id)
    user, token = await add_user(
        services, tenant, role=Role.AUDITOR, clearance=Classification.INTERNAL
    )
    readers = [
        (
            tenant.tokens[Role.ADMIN],
            principal(tenant.org_id, Role.ADMIN, Classification.RESTRICTED, "legal"),
        ),
        (token, principal(tenant.org_id, Role.AUDITOR, Classification.INTERNAL, "legal", user.id)),
    ]
    for secret, reader in readers:
        body = await gql(client, BREAKDOWNS, variables, token=secret)
        assert body.get("errors") is None, body
        data = body["data"]
        documents = oracle.visible_documents(base, reader)
        analyses = [a for a in base.analyses.values() if a.document_id in documents]
        # AI usage by day, model and classification
        usage: dict[tuple[str, str, str], list[Any]] = {}
        for a in analyses:
            key = (
                oracle.day_of(a.completed_at).isoformat(),
                a.model,
                documents[a.document_id].classification.value,
            )
            row = usage.setdefault(key, [0, 0, Decimal(0), 0])
            row[0] += 1
            row[1] += a.tokens_used
            row[2] += Decimal(a.cost_usd)
            row[3] += len(a.feedback_items)
        assert {
            (r["periodStart"], r["model"], r["classification"]): [
                r["analyses"],
                r["tokensUsed"],
                Decimal(r["costUsd"]),
                r["feedbackItems"],
            ]
            for r in data["aiUsage"]
        } == usage
        assert all(r["documentType"] is None for r in data["aiUsage"])
        assert data["totals"] == [
            {
                "periodStart": start.isoformat(),
                "model": None,
                "analyses": len(analyses),
                "costUsd": data["totals"][0]["costUsd"],
            }
        ]
        assert Decimal(data["totals"][0]["costUsd"]) == sum(
            (Decimal(a.cost_usd) for a in analyses), Decimal(0)
        )
        # risk by document type
        risks: dict[tuple[str, str | None], int] = {}
        for d in documents.values():
            key = (d.document_type.value, d.risk_level.value if d.risk_level else None)
            risks[key] = risks.get(key, 0) + 1
        assert {
            (r["documentType"], r["riskLevel"]): r["documents"] for r in data["riskDistribution"]
        } == risks
        # acceptance by category and model
        acceptance: dict[tuple[str | None, str | None], list[int]] = {}
        for f in base.feedback:
            if f.document_id not in documents:
                continue
            model = base.analyses[f.analysis_id].model if f.analysis_id else None
            row = acceptance.setdefault((f.category, model), [0, 0, 0, 0])
            row[0] += 1
            row[1] += f.action is FeedbackAction.ACCEPTED
            row[2] += f.action is FeedbackAction.CUSTOM
            row[3] += f.workflow_status is WorkflowStatus.APPROVED
        got = {
            (r["category"], r["model"]): [
                r["feedback"],
                r["accepted"],
                r["custom"],
                r["approvedInReview"],
            ]
            for r in data["feedbackAcceptance"]
        }
        assert got == acceptance
        for r in data["feedbackAcceptance"]:
            assert r["acceptanceRate"] == pytest.approx(r["accepted"] / r["feedback"])
        # activity by day, reviews by hour, and the hour-of-day profile
        events = [e for e in base.events if oracle.sees(reader, e.classification, e.department)]

        def per(
            key: Callable[[AuditEvent], Any], chosen: list[AuditEvent]
        ) -> dict[Any, tuple[int, int]]:
            found: dict[Any, list[Any]] = {}
            for e in chosen:
                entry = found.setdefault(key(e), [0, set()])
                entry[0] += 1
                entry[1].add(e.actor_id)
            return {k: (n, len(users)) for k, (n, users) in found.items()}

        def midnight(e: AuditEvent) -> str:
            day = oracle.day_of(e.created_at)
            return datetime(day.year, day.month, day.day, tzinfo=UTC).isoformat()

        assert {
            r["periodStart"]: (r["events"], r["activeUsers"]) for r in data["userActivity"]
        } == per(midnight, events)
        reviews = [e for e in events if e.category == "review"]
        assert reviews, "feedback was submitted and reviewed"
        assert {r["periodStart"]: (r["events"], r["activeUsers"]) for r in data["reviews"]} == per(
            lambda e: oracle.hour_of(e.created_at).isoformat(), reviews
        )
        profile = per(lambda e: e.created_at.astimezone(UTC).hour, events)
        assert [
            (r["hourOfDay"], r["events"], r["activeUsers"]) for r in data["activityByHourOfDay"]
        ] == [(h, *profile.get(h, (0, 0))) for h in range(24)]


async def test_existing_data_is_marked_stale_by_the_migration(
    new_database: NewDatabase, settings: Any
) -> None:
    url = await new_database()
    await asyncio.to_thread(migrations.upgrade, url, "0005")
    owner = await asyncpg.connect(
        make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    )
    try:
        org = await owner.fetchval("INSERT INTO organizations (name) VALUES ('old') RETURNING id")
        document = await owner.fetchval(
            "INSERT INTO documents (organization_id, filename, mime_type, file_size, sha256,"
            " document_type, classification, processing_status, storage_tier, total_sections,"
            " total_feedback_items, risk_level, created_at)"
            " VALUES ($1, 'a.txt', 'text/plain', 1, $2, 'CONTRACT', 'INTERNAL', 'COMPLETED',"
            " 'HOT', 1, 0, 'HIGH', now() - interval '3 days') RETURNING id",
            org,
            "a" * 64,
        )
        section = await owner.fetchval(
            "INSERT INTO document_sections (organization_id, document_id, ord, name, content,"
            " word_count) VALUES ($1, $2, 0, 's', 'c', 1) RETURNING id",
            org,
            document,
        )
        await owner.execute(
            "INSERT INTO analysis_results (organization_id, document_id, section_id, model,"
            " started_at, completed_at, duration_seconds, tokens_used, cost_usd)"
            " VALUES ($1, $2, $3, 'rules', now(), now(), 0.5, 10, 0.25)",
            org,
            document,
            section,
        )
        await owner.close()
        # when the BI revision is applied to a database with data
        await asyncio.to_thread(migrations.upgrade, url)
        owner = await asyncpg.connect(
            make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        )
        kinds = {r["kind"] for r in await owner.fetch("SELECT kind FROM bi_invalidations")}
        assert kinds == {"documents", "analyses"}
        # then the first refresh builds the rollups from it
        db = Database(create_engine(url, pool_size=1, max_overflow=0))
        try:
            await bi_refresh.refresh_organization(db, org)
            reader = principal(org, Role.ADMIN, Classification.RESTRICTED, None)
            async with db.transaction(org) as session:
                figures = await bi_models.read_executive_figures(
                    session, reader.scope(), start=today() - timedelta(days=29), end=today()
                )
        finally:
            await db.dispose()
        assert (figures.documents_processed, figures.high_risk_documents) == (1, 1)
        assert (figures.analyses, figures.cost_usd) == (1, Decimal("0.25"))
    finally:
        await owner.close()


async def test_the_finding_count_migration_counts_clear_and_sealed_findings(
    new_database: NewDatabase, settings: Any, tmp_path: Path
) -> None:
    # given analyses stored before finding_count existed: clear (INTERNAL) and sealed
    # (RESTRICTED, whose JSON column holds [])
    url = await new_database()
    await asyncio.to_thread(migrations.upgrade, url)
    own = settings.model_copy(update={"database_url": SecretStr(url), "data_dir": tmp_path})
    services = bootstrap.build_services(own, url)
    tenant = await make_tenant(services)
    await add_document(services, tenant, classification=Classification.INTERNAL)
    await add_document(
        services, tenant, classification=Classification.RESTRICTED, department="legal"
    )
    await services.close()
    await asyncio.to_thread(migrations.downgrade, url, "0014")
    # when the revision is applied
    await asyncio.to_thread(migrations.upgrade, url)
    owner = await asyncpg.connect(
        make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    )
    try:
        counted = await owner.fetch(
            "SELECT sealed IS NOT NULL AS sealed, finding_count FROM analysis_results"
        )
        jobs = await owner.fetch("SELECT organization_id, kind FROM jobs WHERE state = 'QUEUED'")
    finally:
        await owner.close()
    # then clear rows are counted at once, sealed ones by one job of their organization
    assert {r["sealed"] for r in counted} == {True, False}
    assert all((r["finding_count"] is None) == r["sealed"] for r in counted)
    assert [(r["organization_id"], r["kind"]) for r in jobs if r["kind"].startswith("bi.")] == [
        (tenant.org_id, bi_refresh.COUNT_FINDINGS)
    ]
    services = bootstrap.build_services(own, url)
    try:
        await Worker(services).drain()
        await refresh(services, tenant.org_id)
        # and the rollups add up every finding, the sealed ones included
        base = await oracle.base_rows(services, tenant.org_id)
        assert sum(len(a.feedback_items) for a in base.analyses.values()) > 0
        assert any(a.sealed is not None and a.feedback_items for a in base.analyses.values())
        oracle.assert_same_tables(
            await oracle.actual_rollups(services, tenant.org_id), oracle.expected_rollups(base)
        )
        reader = principal(tenant.org_id, Role.ADMIN, Classification.RESTRICTED, "legal")
        start, end = today() - timedelta(days=29), today()
        async with services.db.transaction(tenant.org_id) as session:
            figures = await bi_models.read_executive_figures(
                session, reader.scope(), start=start, end=end
            )
        oracle.assert_close(
            oracle.executive_of(figures), oracle.expected_executive(base, reader, start, end)
        )
    finally:
        await services.close()


async def test_the_demo_counts_every_finding_its_documents_count(
    new_database: NewDatabase, settings: Any, tmp_path: Path
) -> None:
    # given the demo (a RESTRICTED document among them, its findings sealed)
    url = await new_database()
    await asyncio.to_thread(migrations.upgrade, url)
    own = settings.model_copy(update={"database_url": SecretStr(url), "data_dir": tmp_path})
    services = bootstrap.build_services(own, url)
    try:
        org = (await demo.seed(services)).organization_id
        async with services.db.transaction(org) as session:
            documents = list(await session.scalars(sa.select(Document)))
            sealed = await session.scalar(
                sa.select(sa.func.count()).where(Analysis.sealed.is_not(None))
            )
            reader = principal(org, Role.ADMIN, Classification.RESTRICTED, None)
            figures = await bi_models.read_executive_figures(
                session, reader.scope(), start=today() - timedelta(days=29), end=today()
            )
        assert sealed
        # then the executive summary's findings are the documents' own counts, added up
        assert figures.feedback_items == sum(d.total_feedback_items for d in documents)
        base = await oracle.base_rows(services, org)
        oracle.assert_same_tables(
            await oracle.actual_rollups(services, org), oracle.expected_rollups(base)
        )
    finally:
        await services.close()


async def test_a_deleted_organization_leaves_nothing_to_refresh(
    services: Services, database_url: str
) -> None:
    world = await _world(services, seed=7)
    for transaction in PROLOGUE:
        await world.run(transaction)
    owner = await asyncpg.connect(
        make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    )
    try:
        # the owner deletes the organization: its cascades mark slices of a gone organization
        await owner.execute("DELETE FROM organizations WHERE id = $1", world.org)
        assert await owner.fetchval(
            "SELECT count(*) FROM bi_invalidations WHERE organization_id = $1", world.org
        )
        await bi_refresh.schedule_refreshes(services.db, services.settings)
        assert not await owner.fetchval(
            "SELECT count(*) FROM bi_invalidations WHERE organization_id = $1", world.org
        )
        assert not await owner.fetchval(
            "SELECT count(*) FROM jobs WHERE organization_id = $1", world.org
        )
    finally:
        await owner.close()


async def test_a_generated_corpus_chains_its_audit_trail_and_rolls_up_exactly(
    services: Services, database_url: str
) -> None:
    # given a small corpus written with COPY, as `prism demo --scale` does
    corpus = await scale_corpus.generate(
        database_url, documents=120, password_hash="not-used", days=21, seed=3
    )
    assert corpus.rows["documents"] == 120
    assert corpus.rows["analysis_results"] >= corpus.rows["document_sections"] * 0.9
    assert corpus.rows["user_feedback"] > 0
    for org_id, _, _ in corpus.organizations:
        # then each organization's audit trail is a valid hash chain
        async with services.db.transaction(org_id) as session:
            report = await verify_chain(session, organization_id=org_id)
        assert report.valid, report
        assert report.checked > 120 // len(corpus.organizations)
        # and its rollups, once refreshed, are exactly the base aggregates
        await refresh(services, org_id)
        base = await oracle.base_rows(services, org_id)
        oracle.assert_same_tables(
            await oracle.actual_rollups(services, org_id), oracle.expected_rollups(base)
        )
