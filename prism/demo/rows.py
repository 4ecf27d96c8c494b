"""The rows of one generated document, as the scale corpus (``prism.demo.scale``) copies them:
the document, its sections, their analyses, reviewers' feedback with its approval workflow,
and the audit events of it all; the columns of each table, in COPY order."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from prism.demo.draws import (
    ACTIONS,
    CATEGORIES,
    CLASSIFICATIONS,
    DOCUMENT_TYPES,
    HEADINGS,
    ITEMS_PER_ANALYSIS,
    RATINGS,
    RISKS,
    RULES,
    SENTENCES,
    Event,
    Generator,
    Model,
    Person,
    weighted,
)
from prism.models.enums import (
    Classification,
    FeedbackAction,
    ProcessingStatus,
    RiskLevel,
    WorkflowStatus,
)

DOCUMENT_COLUMNS = (
    "id",
    "organization_id",
    "uploaded_by",
    "department",
    "filename",
    "mime_type",
    "file_size",
    "sha256",
    "document_type",
    "classification",
    "language_code",
    "word_count",
    "page_count",
    "processing_status",
    "processing_error",
    "legal_hold",
    "retention_expires_at",
    "storage_tier",
    "total_sections",
    "total_feedback_items",
    "risk_level",
    "confidence",
    "cost_usd",
    "model_used",
    "created_at",
    "updated_at",
    "deleted_at",
)
SECTION_COLUMNS = (
    "id",
    "organization_id",
    "document_id",
    "ord",
    "name",
    "content",
    "word_count",
    "created_at",
)
ANALYSIS_COLUMNS = (
    "id",
    "organization_id",
    "document_id",
    "section_id",
    "model",
    "model_version",
    "started_at",
    "completed_at",
    "duration_seconds",
    "risk_level",
    "confidence",
    "tokens_used",
    "cost_usd",
    "feedback_items",
    "job_id",
    "created_at",
)
FEEDBACK_COLUMNS = (
    "id",
    "organization_id",
    "document_id",
    "section_id",
    "analysis_id",
    "user_id",
    "item_id",
    "action",
    "category",
    "rating",
    "custom_text",
    "workflow_status",
    "approved_by",
    "approved_at",
    "created_at",
    "updated_at",
)
AUDIT_COLUMNS = (
    "id",
    "created_at",
    "organization_id",
    "actor_id",
    "event_type",
    "category",
    "description",
    "resource_type",
    "resource_id",
    "after",
    "user_agent",
    "classification",
    "department",
    "prev_hash",
    "hash",
)


def document_rows(
    gen: Generator,
    org_id: uuid.UUID,
    sections: int,
    mix: Sequence[Model],
    uploaders: list[Person],
    reviewers: list[Person],
    approvers: list[Person],
    rows: dict[str, list[tuple[Any, ...]]],
    events: list[Event],
    acted: Callable[[Person, datetime], None],
) -> None:
    rng, now = gen.rng, gen.now
    uploader = rng.choice(uploaders)
    created = gen.office_moment(now - timedelta(days=gen.days))
    document_id = gen.new_id()
    classification = weighted(rng, CLASSIFICATIONS)
    document_type = weighted(rng, DOCUMENT_TYPES)
    roll = rng.random()
    status = (
        ProcessingStatus.FAILED
        if roll < 0.03
        else ProcessingStatus.ANALYZING
        if roll < 0.04 and created > now - timedelta(days=2)
        else ProcessingStatus.COMPLETED
    )
    filename = f"{document_type.value.lower()}-{document_id.hex[:8]}.pdf"
    acted(uploader, created)
    events.append(
        Event(
            gen.new_id(),
            created,
            org_id,
            uploader.id,
            "document.upload",
            "data_change",
            f"Document {filename!r} uploaded",
            "Document",
            document_id,
            {"filename": filename, "classification": classification.value},
            classification,
            uploader.department,
        )
    )
    section_ids = []
    for ord_ in range(sections):
        section_id = gen.new_id()
        section_ids.append(section_id)
        heading = HEADINGS[ord_ % len(HEADINGS)]
        rows["document_sections"].append(
            (
                section_id,
                org_id,
                document_id,
                ord_,
                f"{ord_ + 1}. {heading}",
                rng.choice(SENTENCES),
                180,
                created,
            )
        )
    runs = 0 if status is ProcessingStatus.FAILED else 2 if rng.random() < 0.06 else 1
    finished = created + timedelta(seconds=rng.uniform(20, 300))
    latest: list[tuple[RiskLevel, float, Decimal, int, str]] = []
    for run in range(runs):
        model = mix[rng.randrange(len(mix))]
        if run:
            finished = gen.office_moment(finished)
        job_id = gen.new_id()
        latest = []
        clock = finished
        for ord_, section_id in enumerate(section_ids):
            if status is ProcessingStatus.ANALYZING and ord_ >= len(section_ids) // 2:
                break
            seconds = rng.uniform(*model.seconds)
            started, clock = clock, clock + timedelta(seconds=seconds)
            risk = weighted(rng, RISKS)
            confidence = round(rng.uniform(0.55, 0.99), 3)
            items = [
                {
                    "id": f"{ord_}-{n}",
                    "category": rng.choice(CATEGORIES),
                    "description": "Review this clause.",
                    "riskLevel": risk.value,
                    "confidence": confidence,
                }
                for n in range(weighted(rng, ITEMS_PER_ANALYSIS))
            ]
            if model is RULES:
                tokens, cost = 0, Decimal(0)
            else:
                prompt, answer = rng.randint(600, 3_000), rng.randint(80, 700)
                tokens = prompt + answer
                cost = (
                    prompt * model.input_price_per_1k + answer * model.output_price_per_1k
                ) / 1000
                cost = cost.quantize(Decimal("0.000001"))
            analysis_id = gen.new_id()
            rows["analysis_results"].append(
                (
                    analysis_id,
                    org_id,
                    document_id,
                    section_id,
                    model.name,
                    model.version,
                    started,
                    clock,
                    seconds,
                    risk.value,
                    confidence,
                    tokens,
                    cost,
                    orjson.dumps(items).decode(),
                    job_id,
                    clock,
                )
            )
            latest.append((risk, confidence, cost, len(items), model.name))
            if items and rng.random() < 0.35:
                _feedback(
                    gen,
                    org_id,
                    document_id,
                    section_id,
                    analysis_id,
                    items,
                    clock,
                    reviewers,
                    approvers,
                    classification,
                    uploader.department,
                    rows,
                    events,
                    acted,
                )
        events.append(
            Event(
                gen.new_id(),
                clock,
                org_id,
                None,
                "document.analyzed",
                "processing",
                f"Document {filename!r} analysed: {len(latest)} sections",
                "Document",
                document_id,
                {"jobId": str(job_id)},
                classification,
                uploader.department,
            )
        )
    risks = [r for r, *_ in latest]
    deleted = gen.office_moment(created) if rng.random() < 0.01 else None
    rows["documents"].append(
        (
            document_id,
            org_id,
            uploader.id,
            uploader.department,
            filename,
            "application/pdf",
            rng.randint(20_000, 4_000_000),
            uuid.UUID(int=gen.rng.getrandbits(128)).hex * 2,
            document_type.value,
            classification.value,
            "en",
            sections * 180,
            sections // 3 + 1,
            status.value,
            "The PDF could not be parsed." if status is ProcessingStatus.FAILED else None,
            False,
            created + timedelta(days=2555),
            "HOT",
            sections,
            sum(n for *_, n, _ in latest),
            max(risks, key=lambda r: r.rank).value if risks else None,
            round(sum(c for _, c, *_ in latest) / len(latest), 4) if latest else None,
            sum((c for _, _, c, *_ in latest), Decimal(0)) if latest else None,
            latest[0][4] if latest else None,
            created,
            finished,
            deleted,
        )
    )


def _feedback(
    gen: Generator,
    org_id: uuid.UUID,
    document_id: uuid.UUID,
    section_id: uuid.UUID,
    analysis_id: uuid.UUID,
    items: list[dict[str, Any]],
    analysed: datetime,
    reviewers: list[Person],
    approvers: list[Person],
    classification: Classification,
    department: str,
    rows: dict[str, list[tuple[Any, ...]]],
    events: list[Event],
    acted: Callable[[Person, datetime], None],
) -> None:
    rng, now = gen.rng, gen.now
    given = analysed + timedelta(seconds=rng.expovariate(1 / 7_200))
    if given > now - timedelta(minutes=1):
        return
    reviewer = rng.choice(reviewers)
    item = rng.choice(items)
    action = weighted(rng, ACTIONS)
    rating = weighted(rng, RATINGS)
    feedback_id = gen.new_id()
    status, approver, approved_at = WorkflowStatus.SUBMITTED, None, None
    reviewed = given + timedelta(seconds=rng.expovariate(1 / 86_400))
    if reviewed < now and rng.random() < 0.7:
        candidates = [a for a in approvers if a.id != reviewer.id]
        approver = rng.choice(candidates)
        approved_at = reviewed
        status = WorkflowStatus.APPROVED if rng.random() < 0.85 else WorkflowStatus.REJECTED
    rows["user_feedback"].append(
        (
            feedback_id,
            org_id,
            document_id,
            section_id,
            analysis_id,
            reviewer.id,
            item["id"],
            action.value,
            item["category"],
            rating,
            "Rephrase as agreed with counsel."
            if action in (FeedbackAction.CUSTOM, FeedbackAction.MODIFIED)
            else None,
            status.value,
            approver.id if approver else None,
            approved_at,
            given,
            approved_at or given,
        )
    )
    acted(reviewer, given)
    subject = (classification, department)
    events.append(
        Event(
            gen.new_id(),
            given,
            org_id,
            reviewer.id,
            "feedback.submit",
            "review",
            f"Feedback {action.value} on analysis item {item['id']}",
            "Feedback",
            feedback_id,
            {"action": action.value, "itemId": item["id"], "rating": rating},
            *subject,
        )
    )
    if approver is not None and approved_at is not None:
        acted(approver, approved_at)
        events.append(
            Event(
                gen.new_id(),
                approved_at,
                org_id,
                approver.id,
                "feedback.review",
                "review",
                f"Feedback {status.value.lower()}",
                "Feedback",
                feedback_id,
                {"workflowStatus": status.value},
                *subject,
            )
        )
