"""GraphQL enums: the database's enumerations (``prism.models.enums``), registered with
Strawberry under the same names, so one value flows from a row to the client unchanged."""

from __future__ import annotations

from enum import Enum

import strawberry

from prism.models.enums import (
    Classification,
    DataCategory,
    DocumentType,
    FeedbackAction,
    JobState,
    ProcessingStatus,
    RiskLevel,
    Role,
    StorageTier,
    WorkflowStatus,
)

for _enum, _description in (
    (Role, "What a user may do; ADMIN may do everything."),
    (Classification, "Sensitivity: PUBLIC < INTERNAL < CONFIDENTIAL < RESTRICTED."),
    (DocumentType, "Kind of document."),
    (ProcessingStatus, "Where a document is in the pipeline."),
    (RiskLevel, "Risk the AI analysis found."),
    (FeedbackAction, "What a reviewer did with an AI feedback item."),
    (WorkflowStatus, "Approval state of reviewer feedback."),
    (JobState, "State of a background job."),
    (StorageTier, "Storage tier of a document's file."),
    (DataCategory, "What a retention policy governs."),
):
    strawberry.enum(_enum, description=_description)


@strawberry.enum(description="Fields documents can be ordered by.")
class DocumentOrderField(Enum):
    CREATED_AT = "CREATED_AT"
    FILENAME = "FILENAME"
    FILE_SIZE = "FILE_SIZE"
    RISK = "RISK"


@strawberry.enum(description="Sort direction.")
class OrderDirection(Enum):
    ASC = "ASC"
    DESC = "DESC"


__all__ = [
    "Classification",
    "DataCategory",
    "DocumentOrderField",
    "DocumentType",
    "FeedbackAction",
    "JobState",
    "OrderDirection",
    "ProcessingStatus",
    "RiskLevel",
    "Role",
    "StorageTier",
    "WorkflowStatus",
]
