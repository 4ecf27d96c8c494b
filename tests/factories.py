"""Test data made through Prism's own functions (operators, pipeline), never raw inserts."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from prism.analysis.rules import RulesAnalyzer
from prism.audit import OPERATOR
from prism.authz.principal import SCOPES
from prism.documents.processing import analyze_sections, store_sections
from prism.execution.ids import to_global_id
from prism.extraction.text import split_sections
from prism.identity import organizations as identity_organizations
from prism.identity import users as identity_users
from prism.models.documents import Document
from prism.models.enums import Classification, DocumentType, Role
from prism.models.users import User
from prism.services import Services
from prism.tokens import api_tokens

PASSWORD = "correct horse battery staple"
CLEARANCE = {
    Role.ADMIN: Classification.RESTRICTED,
    Role.APPROVER: Classification.CONFIDENTIAL,
    Role.REVIEWER: Classification.CONFIDENTIAL,
    Role.AUDITOR: Classification.CONFIDENTIAL,
    Role.VIEWER: Classification.INTERNAL,
}

CONTRACT = """MASTER AGREEMENT

1. Term
This agreement shall automatically renew for one-year terms.

2. Liability
The supplier accepts unlimited liability. Contact jane.doe@example.com or 415-555-0100.

3. Termination
Either party may terminate at any time at its sole discretion.
"""


@dataclass
class Tenant:
    org_id: uuid.UUID
    name: str
    domain: str
    users: dict[Role, User] = field(default_factory=dict)
    tokens: dict[Role, str] = field(default_factory=dict)

    def email(self, role: Role) -> str:
        return self.users[role].email

    def user_gid(self, role: Role) -> str:
        return to_global_id("User", self.users[role].id)


async def make_tenant(services: Services, *, department: str = "legal") -> Tenant:
    suffix = uuid.uuid4().hex[:8]
    org = await identity_organizations.create_organization(
        services, OPERATOR, f"Org {suffix}", domain=f"org-{suffix}.test"
    )
    tenant = Tenant(org_id=org.id, name=org.name, domain=f"org-{suffix}.test")
    for role in Role:
        tenant.users[role] = await identity_users.add_user(
            services,
            OPERATOR,
            org.id,
            email=f"{role.value.lower()}@{tenant.domain}",
            password=PASSWORD,
            role=role,
            clearance=CLEARANCE[role],
            department=department,
            first_name=role.value.title(),
            last_name="Tester",
        )
        created = await api_tokens.create_token(
            services,
            OPERATOR,
            org.id,
            name=f"{role.value.lower()} token",
            scopes=sorted(SCOPES),
            user_email=tenant.email(role),
        )
        tenant.tokens[role] = created.secret
    return tenant


async def add_user(
    services: Services,
    tenant: Tenant,
    *,
    role: Role,
    clearance: Classification,
    department: str | None = "legal",
) -> tuple[User, str]:
    """An extra user and an all-scopes token acting for them."""
    email = f"{role.value.lower()}-{uuid.uuid4().hex[:6]}@{tenant.domain}"
    user = await identity_users.add_user(
        services,
        OPERATOR,
        tenant.org_id,
        email=email,
        password=PASSWORD,
        role=role,
        clearance=clearance,
        department=department,
    )
    created = await api_tokens.create_token(
        services, OPERATOR, tenant.org_id, name="extra", scopes=sorted(SCOPES), user_email=email
    )
    return user, created.secret


async def add_document(
    services: Services,
    tenant: Tenant,
    *,
    text: str = CONTRACT,
    classification: Classification = Classification.INTERNAL,
    department: str | None = "legal",
    document_type: DocumentType = DocumentType.CONTRACT,
    filename: str | None = None,
    uploader: Role = Role.REVIEWER,
) -> Document:
    """A document that went through sectioning, PII scanning and the rules analyzer."""
    content = f"{text}\n{uuid.uuid4()}".encode()  # unique bytes: dedup is per content hash
    async with services.db.transaction(tenant.org_id) as session:
        document = Document(
            organization_id=tenant.org_id,
            uploaded_by=tenant.users[uploader].id,
            department=department,
            filename=filename or f"doc-{uuid.uuid4().hex[:6]}.txt",
            mime_type="text/plain",
            file_size=len(content),
            sha256=hashlib.sha256(content).hexdigest(),
            document_type=document_type,
            classification=classification,
        )
        session.add(document)
        await session.flush()
        sections = await store_sections(
            session, document, split_sections(text), envelope=services.envelope
        )
        await analyze_sections(
            session, document, sections, RulesAnalyzer(), envelope=services.envelope
        )
    return document


def gid(type_name: str, row_id: uuid.UUID) -> str:
    return to_global_id(type_name, row_id)


async def gql(
    client: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    sent = {"content-type": "application/json", **(headers or {})}
    if token:
        sent["authorization"] = f"Bearer {token}"
    response = await client.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=sent
    )
    body: dict[str, Any] = response.json()
    body["_status"] = response.status_code
    return body


def codes(body: dict[str, Any]) -> list[str]:
    return [e.get("extensions", {}).get("code") for e in body.get("errors") or []]
