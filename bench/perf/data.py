"""The benchmark's data: organizations, users, documents with sections, analyses and reviewer
feedback, loaded with COPY into a fresh database migrated by Prism's migrations.

Organizations, the benchmark principal and its API token go through Prism's own operator
functions (the same as `prism org create`, `prism user create`, `prism token create`); the
bulk rows go in with COPY (asyncpg ``copy_records_to_table``) as the login user, which owns the
tables: row-level security is enabled but not forced on them, so it does not apply to the owner
(and an embedded server's login user is a superuser anyway). The data is deterministic (seeded).

Every document is at most CONFIDENTIAL and none is deleted, and the principal has CONFIDENTIAL
clearance: it sees every document of its organization, no content is masked for it, and no
read is of RESTRICTED content (Prism audits those, which would add writes to a read benchmark).
So PostGraphile, which knows only row-level security, sees exactly the rows Prism shows.
"""

from __future__ import annotations

import hashlib
import random
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from bench.common import BenchDatabase

SECTIONS_PER_DOCUMENT = 5
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PRINCIPAL_DEPARTMENT = "Legal"

SENTENCES = (
    "The Supplier shall deliver the Services described in Schedule 1 in accordance with the "
    "agreed service levels.",
    "The Customer shall pay each undisputed invoice within thirty days of its receipt.",
    "This Agreement shall automatically renew for successive periods of twelve months.",
    "The Supplier shall indemnify the Customer against all losses arising from any breach.",
    "Each party shall use reasonable efforts to resolve any dispute through negotiation.",
    "The Customer may terminate this Agreement at any time at its sole discretion.",
    "Confidential Information shall not be disclosed to any third party.",
    "All intellectual property rights in the deliverables shall vest in the Customer.",
    "Any notice under this Agreement shall be in writing and delivered by hand or by email.",
    "The Supplier shall comply with all applicable data protection laws.",
)
TITLES = ("Services", "Fees", "Term", "Liability", "Termination", "Confidentiality", "Notices")
CATEGORIES = (
    "auto_renewal",
    "indemnity",
    "unlimited_liability",
    "unilateral_termination",
    "vague_terms",
    "pii_exposure",
)
KINDS = ("contract", "policy", "report", "memo", "agreement", "statement")
DOCUMENT_TYPES = ("CONTRACT", "POLICY", "REPORT", "GENERAL")
ROLES = ("VIEWER", "REVIEWER", "REVIEWER", "APPROVER", "AUDITOR", "ADMIN")
DEPARTMENTS = ("Legal", "Finance", "Sales", "Engineering")
RISKS = ("LOW", "MEDIUM", "HIGH")


@dataclass(frozen=True)
class Dataset:
    """What the servers and the queries need to know about the loaded data."""

    organizations: list[str]
    organization_id: str  # the benchmark principal's organization
    organization_name: str
    user_id: str  # the benchmark principal: an ADMIN with CONFIDENTIAL clearance
    user_email: str
    token: str  # its API token (every scope)
    token_id: str
    token_name: str
    node_document_id: str  # the document of the node(id) query
    counts: dict[str, int]
    seconds: float

    def as_json(self) -> dict[str, Any]:
        shown = asdict(self)
        shown["token"] = self.token[:14] + "…"  # never written to results
        return shown


def _column_names(rows: list[dict[str, Any]]) -> list[str]:
    return list(rows[0]) if rows else []


async def _copy(conn: Any, table: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    columns = _column_names(rows)
    await conn.copy_records_to_table(
        table, records=[tuple(row[c] for c in columns) for row in rows], columns=columns
    )


def _section_text(rng: random.Random) -> tuple[str, list[dict[str, Any]]]:
    """About 60 words of contract prose; one section in four names a contact's e-mail, with
    its PII finding (offsets, as the extraction stores them)."""
    text = " ".join(rng.choice(SENTENCES) for _ in range(rng.randint(3, 5)))
    findings: list[dict[str, Any]] = []
    if rng.random() < 0.25:
        email = f"contact{rng.randint(1, 999)}@example.com"
        text += f" Questions go to {email}."
        start = text.index(email)
        findings.append(
            {"type": "EMAIL", "start": start, "end": start + len(email), "confidence": 0.99}
        )
    return text, findings


def _feedback_items(rng: random.Random, section_key: str) -> list[dict[str, Any]]:
    items = []
    for k in range(rng.choice((0, 1, 1, 2, 3))):
        category = rng.choice(CATEGORIES)
        items.append(
            {
                "id": f"{section_key}-{k}",
                "category": category,
                "description": f"The clause may carry {category.replace('_', ' ')} risk.",
                "suggestion": "Narrow the clause and state the limits explicitly."
                if rng.random() < 0.7
                else None,
                "riskLevel": rng.choice(RISKS),
                "confidence": round(rng.uniform(0.5, 0.99), 2),
                "quote": rng.choice(SENTENCES)[:60],
            }
        )
    return items


async def generate(
    bench: BenchDatabase,
    *,
    documents: int = 10_000,
    organizations: int = 4,
    users_per_organization: int = 20,
    seed: int = 8,
) -> Dataset:
    """Load the data into ``bench``'s database (whose first organization is the principal's)
    and create the principal's API token."""
    from prism.audit import OPERATOR
    from prism.authz.principal import SCOPES
    from prism.identity import organizations as identity_organizations
    from prism.identity import users as identity_users
    from prism.models.enums import Classification, Role
    from prism.tokens import api_tokens

    started = time.perf_counter()
    rng = random.Random(seed)  # noqa: S311 - reproducible data, not security
    services = bench.services
    org_ids = [bench.organization_id]
    for n in range(1, organizations):
        org = await identity_organizations.create_organization(
            services, OPERATOR, f"Bench organization {n}", domain=f"org{n}.bench.example"
        )
        org_ids.append(org.id)
    principal_email = "bench-admin@org0.bench.example"
    principal = await identity_users.add_user(
        services,
        OPERATOR,
        org_ids[0],
        email=principal_email,
        password="bench-password-" + "x" * 12,
        role=Role.ADMIN,
        clearance=Classification.CONFIDENTIAL,
        department=PRINCIPAL_DEPARTMENT,
        first_name="Bench",
        last_name="Admin",
    )
    token = await api_tokens.create_token(
        services,
        OPERATOR,
        org_ids[0],
        name="perf-bench",
        scopes=sorted(SCOPES),
        user_email=principal_email,
    )
    password_hash = await services.passwords.hash_async("bench-password-" + "y" * 12)

    base = datetime(2026, 1, 1, tzinfo=UTC)
    users: list[dict[str, Any]] = []
    docs: list[dict[str, Any]] = []
    sections: list[dict[str, Any]] = []
    analyses: list[dict[str, Any]] = []
    feedback: list[dict[str, Any]] = []
    users_of: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for o, org_id in enumerate(org_ids):
        members = []
        for u in range(users_per_organization):
            members.append(
                {
                    "id": uuid.UUID(int=rng.getrandbits(128), version=4),
                    "organization_id": org_id,
                    "email": f"user{u:03d}@org{o}.bench.example",
                    "password_hash": password_hash,
                    "first_name": f"User{u}",
                    "last_name": f"Org{o}",
                    "role": ROLES[u % len(ROLES)],
                    "department": DEPARTMENTS[u % len(DEPARTMENTS)],
                    "clearance": ("INTERNAL", "CONFIDENTIAL")[u % 2],
                    "is_active": True,
                    "mfa_enabled": False,
                    "created_at": base - timedelta(days=30, minutes=u),
                    "updated_at": base - timedelta(days=30, minutes=u),
                }
            )
        users += members
        users_of[org_id] = members

    per_org = documents // len(org_ids)
    node_document: uuid.UUID | None = None
    for o, org_id in enumerate(org_ids):
        members = users_of[org_id]
        for i in range(per_org + (1 if o < documents % len(org_ids) else 0)):
            doc_id = uuid.UUID(int=rng.getrandbits(128), version=4)
            uploader = rng.choice(members)
            created = base + timedelta(minutes=i, seconds=o)  # distinct: a stable order
            status = "COMPLETED" if rng.random() < 0.9 else rng.choice(("ANALYZING", "FAILED"))
            doc_risks: list[str] = []
            items_total = 0
            word_total = 0
            analysis_of_doc: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
            for s in range(SECTIONS_PER_DOCUMENT):
                section_id = uuid.UUID(int=rng.getrandbits(128), version=4)
                content, findings = _section_text(rng)
                words = len(content.split())
                word_total += words
                sections.append(
                    {
                        "id": section_id,
                        "organization_id": org_id,
                        "document_id": doc_id,
                        "ord": s,
                        "name": f"{s + 1}. {TITLES[(i + s) % len(TITLES)]}",
                        "content": content,
                        "word_count": words,
                        "pii_findings": orjson.dumps(findings).decode(),
                        "created_at": created + timedelta(seconds=5),
                    }
                )
                items = _feedback_items(rng, f"{i}-{s}")
                items_total += len(items)
                risk = max((it["riskLevel"] for it in items), key=RISKS.index, default="LOW")
                doc_risks.append(risk)
                started_at = created + timedelta(minutes=1, milliseconds=100 * s)
                analysis = {
                    "id": uuid.UUID(int=rng.getrandbits(128), version=4),
                    "organization_id": org_id,
                    "document_id": doc_id,
                    "section_id": section_id,
                    "model": "rules",
                    "model_version": "1",
                    "started_at": started_at,
                    "completed_at": started_at + timedelta(milliseconds=80),
                    "duration_seconds": 0.08,
                    "risk_level": risk,
                    "confidence": round(rng.uniform(0.5, 0.99), 2),
                    "tokens_used": 0,
                    "cost_usd": Decimal("0"),
                    "feedback_items": orjson.dumps(items).decode(),
                    "job_id": None,
                    "created_at": started_at + timedelta(milliseconds=80),
                }
                analyses.append(analysis)
                analysis_of_doc.append((analysis, items))
            reviews = rng.choice((0, 1, 2, 2, 3, 4))
            for f in range(reviews):
                analysis, items = rng.choice(analysis_of_doc)
                item = rng.choice(items) if items else None
                action = rng.choice(("ACCEPTED", "ACCEPTED", "REJECTED", "MODIFIED"))
                state = rng.choice(("SUBMITTED", "APPROVED", "REJECTED"))
                author = rng.choice(members)
                at = created + timedelta(hours=1, minutes=f)
                feedback.append(
                    {
                        "id": uuid.UUID(int=rng.getrandbits(128), version=4),
                        "organization_id": org_id,
                        "document_id": doc_id,
                        "section_id": analysis["section_id"],
                        "analysis_id": analysis["id"],
                        "user_id": author["id"],
                        "item_id": item["id"] if item else None,
                        "action": action,
                        "category": item["category"] if item else None,
                        "rating": rng.randint(1, 5),
                        "custom_text": "Reword as agreed with the customer."
                        if action == "MODIFIED"
                        else None,
                        "highlighted_text": None,
                        "workflow_status": state,
                        "approved_by": rng.choice(members)["id"] if state != "SUBMITTED" else None,
                        "approved_at": at + timedelta(minutes=30) if state != "SUBMITTED" else None,
                        "created_at": at,
                        "updated_at": at,
                    }
                )
            if o == 0 and node_document is None and i >= 100 and reviews >= 3 and items_total >= 5:
                node_document = doc_id
            docs.append(
                {
                    "id": doc_id,
                    "organization_id": org_id,
                    "uploaded_by": uploader["id"],
                    "department": uploader["department"],
                    "filename": f"{rng.choice(KINDS)}-{rng.randint(0, 99_999):05d}-{i}.docx",
                    "mime_type": DOCX,
                    "file_size": rng.randint(20_000, 2_000_000),
                    "sha256": hashlib.sha256(f"{o}:{i}".encode()).hexdigest(),
                    "storage_key": f"org/{org_id}/documents/{doc_id}",
                    "document_type": rng.choice(DOCUMENT_TYPES),
                    "classification": rng.choices(
                        ("PUBLIC", "INTERNAL", "CONFIDENTIAL"), weights=(1, 6, 3)
                    )[0],
                    "language_code": "en",
                    "word_count": word_total,
                    "page_count": 1 + word_total // 500,
                    "processing_status": status,
                    "processing_error": "extraction timed out" if status == "FAILED" else None,
                    "legal_hold": False,
                    "storage_tier": "HOT",
                    "total_sections": SECTIONS_PER_DOCUMENT,
                    "total_feedback_items": items_total,
                    "risk_level": max(doc_risks, key=RISKS.index),
                    "confidence": round(rng.uniform(0.5, 0.99), 2),
                    "cost_usd": Decimal("0"),
                    "model_used": "rules",
                    "created_at": created,
                    "updated_at": created + timedelta(minutes=2),
                }
            )
    if node_document is None:
        raise RuntimeError("no document fits the node(id) query: raise --documents")

    conn = await bench.owner()
    try:
        async with conn.transaction():
            for table, rows in (
                ("users", users),
                ("documents", docs),
                ("document_sections", sections),
                ("analysis_results", analyses),
                ("user_feedback", feedback),
            ):
                await _copy(conn, table, rows)
        # Statistics and the visibility map, as a database that has lived a while has them.
        await conn.execute("VACUUM ANALYZE")
        name = await conn.fetchval("SELECT name FROM organizations WHERE id = $1", org_ids[0])
    finally:
        await conn.close()
    return Dataset(
        organizations=[str(o) for o in org_ids],
        organization_id=str(org_ids[0]),
        organization_name=name,
        user_id=str(principal.id),
        user_email=principal_email,
        token=token.secret,
        token_id=str(token.token.id),
        token_name=token.token.name,
        node_document_id=str(node_document),
        counts={
            "organizations": len(org_ids),
            "users": len(users) + 1,
            "documents": len(docs),
            "document_sections": len(sections),
            "analysis_results": len(analyses),
            "user_feedback": len(feedback),
            "documents_of_principal_org": sum(
                1 for d in docs if d["organization_id"] == org_ids[0]
            ),
        },
        seconds=time.perf_counter() - started,
    )
