"""Demo data: two organizations, users of every role, documents of every classification with
sections, PII findings, analyses and reviewed feedback. Running it again reuses the data and
only issues a fresh demo token (the previous one is revoked: tokens are shown once)."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from importlib import resources

import sqlalchemy as sa

from prism import operators
from prism.authz.principal import SCOPES
from prism.errors import NotFound
from prism.ingest.text import split_sections
from prism.jobs.analyzers.rules import RulesAnalyzer
from prism.jobs.pipeline import analyze_sections, store_sections
from prism.models import users as user_models
from prism.models.audit import Actor, record_event
from prism.models.base import utcnow
from prism.models.documents import Document
from prism.models.enums import (
    Classification,
    DocumentType,
    FeedbackAction,
    Role,
    WorkflowStatus,
)
from prism.models.feedback import Feedback
from prism.models.users import ApiToken
from prism.resolvers.context import Services

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
        org_id = await operators.find_organization(services, DEMO_ORGANIZATION)
        created = False
    except NotFound:
        org_id = await _seed_organization(services, DEMO_ORGANIZATION, ACME_USERS, ACME_DOCUMENTS)
        await _seed_organization(services, OTHER_ORGANIZATION, GLOBEX_USERS, GLOBEX_DOCUMENTS)
        created = True
    token = await _fresh_token(services, org_id)
    return DemoResult(organization_id=org_id, token=token, created=created)


async def _seed_organization(
    services: Services,
    name: str,
    people: list[tuple[str, Role, Classification, str, str, str]],
    documents: list[tuple[str, DocumentType, Classification, str]],
) -> uuid.UUID:
    org = await operators.create_organization(services, name, domain=people[0][0].split("@")[1])
    users = {}
    for email, role, clearance, department, first, last in people:
        users[role] = await operators.create_user(
            services,
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
    analyzer = RulesAnalyzer()
    async with services.db.transaction(org.id) as session:
        for filename, doc_type, classification, department in documents:
            content = sample(filename)
            document = Document(
                organization_id=org.id,
                uploaded_by=uploader.id,
                department=department,
                filename=filename,
                mime_type="text/plain",
                file_size=len(content),
                sha256=hashlib.sha256(content).hexdigest(),
                document_type=doc_type,
                classification=classification,
                language_code="en",
                page_count=1,
            )
            session.add(document)
            await session.flush()
            sections = await store_sections(session, document, split_sections(content.decode()))
            analyses = await analyze_sections(session, document, sections, analyzer)
            await record_event(
                session,
                organization_id=org.id,
                actor=Actor(user_id=uploader.id),
                event_type="document.create",
                category="data_change",
                description=f"Demo document {filename!r} loaded",
                resource_type="Document",
                resource_id=document.id,
                meta=operators.CLI,
            )
            reviewer, approver = users.get(Role.REVIEWER), users.get(Role.APPROVER)
            flagged = [a for a in analyses if a.feedback_items]
            if reviewer and approver and flagged:
                first_item = flagged[0].feedback_items[0]
                session.add_all(
                    [
                        Feedback(
                            organization_id=org.id,
                            document_id=document.id,
                            section_id=flagged[0].section_id,
                            analysis_id=flagged[0].id,
                            user_id=reviewer.id,
                            item_id=first_item["id"],
                            category=first_item["category"],
                            action=FeedbackAction.ACCEPTED,
                            rating=5,
                            workflow_status=WorkflowStatus.APPROVED,
                            approved_by=approver.id,
                            approved_at=utcnow(),
                        ),
                        Feedback(
                            organization_id=org.id,
                            document_id=document.id,
                            section_id=flagged[-1].section_id,
                            analysis_id=flagged[-1].id,
                            user_id=reviewer.id,
                            action=FeedbackAction.CUSTOM,
                            rating=3,
                            custom_text="Ask counsel to review this clause before signature.",
                        ),
                    ]
                )
                await session.flush()
    return org.id


async def _fresh_token(services: Services, org_id: uuid.UUID) -> str:
    admin = await operators.user_by_email(services, org_id, ACME_USERS[0][0])
    async with services.db.transaction(org_id) as session:
        old = await session.scalars(
            sa.select(ApiToken).where(
                ApiToken.user_id == admin.id,
                ApiToken.name == DEMO_TOKEN_NAME,
                ApiToken.revoked_at.is_(None),
            )
        )
        for token in old:
            await user_models.revoke_api_token(session, token)
    created = await operators.create_token(
        services, org_id, name=DEMO_TOKEN_NAME, scopes=sorted(SCOPES), user_email=admin.email
    )
    return created.secret
