"""Demo data: two organizations, users of every role, documents of every classification with
sections, PII findings, analyses and reviewed feedback. Running it again reuses the data and
only issues a fresh demo token (the previous one is revoked: tokens are shown once)."""

from __future__ import annotations

import io
import time
import uuid
from dataclasses import dataclass
from importlib import resources

from prism.audit import OPERATOR
from prism.authz.principal import SCOPES
from prism.bi import refresh as bi_refresh
from prism.demo import scale as scale_corpus
from prism.documents.intake import receive_upload
from prism.errors import NotFound
from prism.identity import organizations as identity_organizations
from prism.identity import users as identity_users
from prism.jobs.worker import Worker
from prism.models import analyses as analysis_models
from prism.models import users as user_models
from prism.models.analyses import Analysis
from prism.models.audit import Actor
from prism.models.base import utcnow
from prism.models.enums import (
    Classification,
    DocumentType,
    FeedbackAction,
    Role,
    WorkflowStatus,
)
from prism.models.feedback import Feedback
from prism.models.scope import Scope
from prism.services import Services
from prism.tokens import api_tokens

DEMO_ORGANIZATION = "Acme Legal"
OTHER_ORGANIZATION = "Globex Corporation"
DEMO_PASSWORD = "prism-demo-password"
DEMO_TOKEN_NAME = "demo"

C = Classification
ACME_USERS = [
    ("admin@acme.example", Role.ADMIN, C.RESTRICTED, "legal", "Ada", "Admin"),
    ("approver@acme.example", Role.APPROVER, C.CONFIDENTIAL, "legal", "Alex", "Approver"),
    ("reviewer@acme.example", Role.REVIEWER, C.CONFIDENTIAL, "legal", "Riley", "Reviewer"),
    ("auditor@acme.example", Role.AUDITOR, C.CONFIDENTIAL, "compliance", "Aubrey", "Auditor"),
    ("viewer@acme.example", Role.VIEWER, C.INTERNAL, "sales", "Vic", "Viewer"),
]
ACME_DOCUMENTS = [
    ("master-services-agreement.txt", DocumentType.CONTRACT, C.CONFIDENTIAL, "legal"),
    ("employee-record.txt", DocumentType.OTHER, C.RESTRICTED, "hr"),
    ("privacy-policy.txt", DocumentType.POLICY, C.PUBLIC, "legal"),
    ("quarterly-report.txt", DocumentType.REPORT, C.INTERNAL, "finance"),
    ("api-specification.txt", DocumentType.TECHNICAL, C.INTERNAL, "engineering"),
]
GLOBEX_USERS = [("admin@globex.example", Role.ADMIN, C.RESTRICTED, "legal", "Gil", "Globex")]
GLOBEX_DOCUMENTS = [
    ("master-services-agreement.txt", DocumentType.CONTRACT, C.CONFIDENTIAL, "legal"),
    ("quarterly-report.txt", DocumentType.REPORT, C.INTERNAL, "finance"),
]


@dataclass(frozen=True)
class DemoResult:
    organization_id: uuid.UUID
    token: str
    created: bool


def sample(name: str) -> bytes:
    return resources.files("prism.demo").joinpath("samples", name).read_bytes()


async def seed(services: Services) -> DemoResult:
    try:
        org_id = await identity_organizations.find_organization(services, DEMO_ORGANIZATION)
        created = False
    except NotFound:
        org_id = await _seed_organization(services, DEMO_ORGANIZATION, ACME_USERS, ACME_DOCUMENTS)
        await _seed_organization(services, OTHER_ORGANIZATION, GLOBEX_USERS, GLOBEX_DOCUMENTS)
        created = True
    token = await _fresh_token(services, org_id)
    # BI numbers at once, without waiting for a worker's next refresh
    await bi_refresh.refresh_organization(services.db, org_id)
    return DemoResult(organization_id=org_id, token=token, created=created)


@dataclass(frozen=True)
class ScaleDemo:
    corpus: scale_corpus.ScaleResult
    token: str
    rollup_seconds: float


async def load_scale(
    services: Services,
    owner_url: str,
    *,
    documents: int,
    days: int,
    seed: int,
    advance: scale_corpus.Advance | None = None,
    planned: scale_corpus.Advance | None = None,
    on_rollups: scale_corpus.Advance | None = None,
) -> ScaleDemo:
    """Generate ``documents`` documents in new organizations (`prism demo --scale`), build
    their BI rollups and issue a token for the largest one's ADMIN. Every generated user
    signs in with the demo password."""
    password_hash = await services.passwords.hash_async(DEMO_PASSWORD)
    corpus = await scale_corpus.generate(
        owner_url,
        documents=documents,
        password_hash=password_hash,
        days=days,
        seed=seed,
        advance=advance,
        planned=planned,
    )
    started = time.perf_counter()
    for org_id, _, _ in corpus.organizations:
        slices = await bi_refresh.refresh_organization(services.db, org_id)
        if on_rollups is not None:
            on_rollups("slices", slices)
    rollup_seconds = time.perf_counter() - started
    org_id, _, admin = corpus.organizations[0]
    created = await api_tokens.create_token(
        services, OPERATOR, org_id, name=DEMO_TOKEN_NAME, scopes=sorted(SCOPES), user_email=admin
    )
    return ScaleDemo(corpus=corpus, token=created.secret, rollup_seconds=rollup_seconds)


async def _seed_organization(
    services: Services,
    name: str,
    people: list[tuple[str, Role, Classification, str, str, str]],
    documents: list[tuple[str, DocumentType, Classification, str]],
) -> uuid.UUID:
    org = await identity_organizations.create_organization(
        services, OPERATOR, name, domain=people[0][0].split("@")[1]
    )
    users = {}
    for email, role, clearance, department, first, last in people:
        users[role] = await identity_users.add_user(
            services,
            OPERATOR,
            org.id,
            email=email,
            password=DEMO_PASSWORD,
            role=role,
            clearance=clearance,
            department=department,
            first_name=first,
            last_name=last,
        )
    uploader = users[Role.ADMIN]
    for filename, doc_type, classification, department in documents:
        async with services.db.transaction(org.id) as session:
            await receive_upload(
                session,
                services,
                scope=Scope.system(org.id),
                uploader_id=uploader.id,
                department=department,
                source=io.BytesIO(sample(filename)),
                filename=filename,
                document_type=doc_type,
                classification=classification,
                analyze=True,
                actor=Actor(user_id=uploader.id),
                meta=OPERATOR,
            )
    # The same pipeline as any upload: extraction and analysis jobs, run here to the end.
    await Worker(services).drain()
    reviewer, approver = users.get(Role.REVIEWER), users.get(Role.APPROVER)
    if reviewer and approver:
        await _review(services, org.id, reviewer.id, approver.id)
    return org.id


async def _review(
    services: Services, org_id: uuid.UUID, reviewer: uuid.UUID, approver: uuid.UUID
) -> None:
    """Reviewer feedback on the first and last flagged analysis of each document."""
    async with services.db.transaction(org_id) as session:
        analyses = await analysis_models.read_flagged_analyses(session)
        by_document: dict[uuid.UUID, list[Analysis]] = {}
        for analysis in analyses:
            by_document.setdefault(analysis.document_id, []).append(analysis)
        for flagged in by_document.values():
            first_item = flagged[0].feedback_items[0]
            session.add_all(
                [
                    Feedback(
                        organization_id=org_id,
                        document_id=flagged[0].document_id,
                        section_id=flagged[0].section_id,
                        analysis_id=flagged[0].id,
                        user_id=reviewer,
                        item_id=first_item["id"],
                        category=first_item["category"],
                        action=FeedbackAction.ACCEPTED,
                        rating=5,
                        workflow_status=WorkflowStatus.APPROVED,
                        approved_by=approver,
                        approved_at=utcnow(),
                    ),
                    Feedback(
                        organization_id=org_id,
                        document_id=flagged[-1].document_id,
                        section_id=flagged[-1].section_id,
                        analysis_id=flagged[-1].id,
                        user_id=reviewer,
                        action=FeedbackAction.CUSTOM,
                        rating=3,
                        custom_text="Ask counsel to review this clause before signature.",
                    ),
                ]
            )
        await session.flush()


async def _fresh_token(services: Services, org_id: uuid.UUID) -> str:
    admin = await identity_users.user_by_email(services, org_id, ACME_USERS[0][0])
    async with services.db.transaction(org_id) as session:
        old = await user_models.read_live_api_tokens_named(session, admin.id, DEMO_TOKEN_NAME)
        for token in old:
            await user_models.revoke_api_token(session, token)
    created = await api_tokens.create_token(
        services,
        OPERATOR,
        org_id,
        name=DEMO_TOKEN_NAME,
        scopes=sorted(SCOPES),
        user_email=admin.email,
    )
    return created.secret
