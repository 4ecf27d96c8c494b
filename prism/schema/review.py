"""Reviewers' feedback on AI analyses: the review fields of the root Mutation."""

from __future__ import annotations

import strawberry

from prism.execution.ids import expect_id
from prism.resolvers import documents as document_resolvers
from prism.schema.base import Info
from prism.schema.documents import Feedback
from prism.schema.enums import FeedbackAction


@strawberry.input(description="A reviewer's response to an analysis or one of its items.")
class SubmitFeedbackInput:
    analysis_id: strawberry.ID
    item_id: str | None = None
    action: FeedbackAction
    custom_text: str | None = None
    rating: int | None = strawberry.field(default=None, description="1 to 5.")
    highlighted_text: str | None = None


@strawberry.input(
    description="Approve or reject submitted feedback (APPROVER, ADMIN; not its author)."
)
class ReviewFeedbackInput:
    id: strawberry.ID
    approve: bool


@strawberry.type
class ReviewMutation:
    """``submitFeedback`` and ``reviewFeedback`` of the root Mutation."""

    @strawberry.mutation(description="Accept, reject or rewrite AI feedback (REVIEWER and up).")
    async def submit_feedback(self, info: Info, input: SubmitFeedbackInput) -> Feedback:
        row = await document_resolvers.submit_feedback(
            info.context,
            document_resolvers.FeedbackInput(
                analysis_id=expect_id(input.analysis_id, "Analysis"),
                action=input.action,
                item_id=input.item_id,
                custom_text=input.custom_text,
                rating=input.rating,
                highlighted_text=input.highlighted_text,
            ),
        )
        return Feedback.from_row(row)

    @strawberry.mutation(description="Approve or reject submitted feedback.")
    async def review_feedback(self, info: Info, input: ReviewFeedbackInput) -> Feedback:
        row = await document_resolvers.review_feedback(
            info.context, expect_id(input.id, "Feedback"), approve=input.approve
        )
        return Feedback.from_row(row)
