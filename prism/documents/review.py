"""Reviewers' feedback on analyses: submitted by a reviewer, then approved or rejected by
someone else (four eyes), audited in the caller's transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from prism import audit
from prism.authz.policy import Action, require
from prism.authz.principal import Principal
from prism.documents.editing import subject_of
from prism.errors import BadUserInput, Conflict, Forbidden, not_found
from prism.models import analyses as analysis_models
from prism.models import documents as document_models
from prism.models import feedback as feedback_models
from prism.models.audit import RequestMeta, Subject
from prism.models.base import utcnow
from prism.models.enums import Classification, FeedbackAction, WorkflowStatus
from prism.models.feedback import Feedback
from prism.models.scope import Scope
from prism.services import Services

MAX_TEXT = 10_000


@dataclass(frozen=True)
class FeedbackInput:
    analysis_id: uuid.UUID
    action: FeedbackAction
    item_id: str | None = None
    custom_text: str | None = None
    rating: int | None = None
    highlighted_text: str | None = None


async def _subject_of_document(
    session: AsyncSession, scope: Scope, document_id: uuid.UUID
) -> Subject:
    rows = await document_models.read_documents_by_ids(session, scope, [document_id])
    return subject_of(rows[0]) if rows else Subject(classification=Classification.RESTRICTED)


def _check_feedback(principal: Principal, data: FeedbackInput) -> None:
    """The feedback's own checks (no database needed): its fields, and the right to submit."""
    if data.rating is not None and not 1 <= data.rating <= 5:
        raise BadUserInput("`rating` is 1 to 5.", argument="rating")
    if (
        data.action in (FeedbackAction.CUSTOM, FeedbackAction.MODIFIED)
        and not (data.custom_text or "").strip()
    ):
        raise BadUserInput(
            f"{data.action.value} feedback needs `customText`.", argument="customText"
        )
    for name, text in (
        ("customText", data.custom_text),
        ("highlightedText", data.highlighted_text),
    ):
        if text is not None and len(text) > MAX_TEXT:
            raise BadUserInput(f"`{name}` is at most {MAX_TEXT} characters.", argument=name)
    require(principal, Action.FEEDBACK_SUBMIT)


async def submit_feedback(
    session: AsyncSession,
    services: Services,
    principal: Principal,
    meta: RequestMeta,
    data: FeedbackInput,
) -> Feedback:
    _check_feedback(principal, data)
    scope = principal.scope()
    found = await analysis_models.read_analyses_by_ids(session, scope, [data.analysis_id])
    if not found:
        raise not_found("Analysis")
    analysis = found[0]
    await services.envelope.open_analyses(session, found)
    category = None
    if data.item_id is not None:
        item = next((i for i in analysis.feedback_items if str(i.get("id")) == data.item_id), None)
        if item is None:
            raise BadUserInput(
                "`itemId` is not a feedback item of that analysis.", argument="itemId"
            )
        category = item.get("category")
    feedback = await feedback_models.create_feedback(
        session,
        Feedback(
            organization_id=principal.organization_id,
            document_id=analysis.document_id,
            section_id=analysis.section_id,
            analysis_id=analysis.id,
            user_id=principal.user_id,
            item_id=data.item_id,
            action=data.action,
            category=category,
            rating=data.rating,
            custom_text=data.custom_text,
            highlighted_text=data.highlighted_text,
            workflow_status=WorkflowStatus.SUBMITTED,
        ),
    )
    await audit.record(
        session,
        principal,
        meta,
        event_type="feedback.submit",
        category="review",
        description=f"Feedback {data.action.value} on analysis item {data.item_id or '-'}",
        resource_type="Feedback",
        resource_id=feedback.id,
        after={"action": data.action.value, "itemId": data.item_id, "rating": data.rating},
        subject=await _subject_of_document(session, scope, analysis.document_id),
    )
    return feedback


async def review_feedback(
    session: AsyncSession,
    services: Services,
    principal: Principal,
    meta: RequestMeta,
    feedback_id: uuid.UUID,
    *,
    approve: bool,
) -> Feedback:
    """Approve (``approve``) or reject submitted feedback: by a person, not its author."""
    require(principal, Action.FEEDBACK_REVIEW)
    feedback = await feedback_models.read_feedback_for_update(
        session, principal.scope(), feedback_id
    )
    if feedback is None:
        raise not_found("Feedback")
    if principal.user_id is None:
        # Four eyes need two people: a service token is nobody in particular.
        raise Forbidden("Feedback is reviewed by a person (a user or a user's token).")
    if feedback.user_id == principal.user_id:
        raise Forbidden("Feedback is reviewed by someone other than its author.")
    if feedback.workflow_status is not WorkflowStatus.SUBMITTED:
        raise Conflict(f"The feedback was already {feedback.workflow_status.value.lower()}.")
    before = {"workflowStatus": feedback.workflow_status.value}
    feedback.workflow_status = WorkflowStatus.APPROVED if approve else WorkflowStatus.REJECTED
    feedback.approved_by = principal.user_id
    feedback.approved_at = utcnow()
    await session.flush()
    await audit.record(
        session,
        principal,
        meta,
        event_type="feedback.review",
        category="review",
        description=f"Feedback {feedback.workflow_status.value.lower()}",
        resource_type="Feedback",
        resource_id=feedback.id,
        before=before,
        after={"workflowStatus": feedback.workflow_status.value},
        subject=await _subject_of_document(session, principal.scope(), feedback.document_id),
    )
    return feedback
