"""Enumerations shared by the database, the policy and the GraphQL surface (same names)."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    VIEWER = "VIEWER"
    REVIEWER = "REVIEWER"
    APPROVER = "APPROVER"
    AUDITOR = "AUDITOR"
    ADMIN = "ADMIN"


class Classification(StrEnum):
    PUBLIC = "PUBLIC"
    INTERNAL = "INTERNAL"
    CONFIDENTIAL = "CONFIDENTIAL"
    RESTRICTED = "RESTRICTED"

    @property
    def rank(self) -> int:
        return _CLASSIFICATION_RANK[self]

    def at_most(self) -> list[Classification]:
        """This level and every level below it."""
        return [c for c in Classification if c.rank <= self.rank]


_CLASSIFICATION_RANK = {c: i for i, c in enumerate(Classification)}


class DocumentType(StrEnum):
    GENERAL = "GENERAL"
    CONTRACT = "CONTRACT"
    POLICY = "POLICY"
    REPORT = "REPORT"
    TECHNICAL = "TECHNICAL"
    OTHER = "OTHER"


class ProcessingStatus(StrEnum):
    UPLOADED = "UPLOADED"
    EXTRACTING = "EXTRACTING"
    EXTRACTED = "EXTRACTED"
    QUEUED = "QUEUED"
    ANALYZING = "ANALYZING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class RiskLevel(StrEnum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"

    @property
    def rank(self) -> int:
        return {"LOW": 1, "MEDIUM": 2, "HIGH": 3}[self.value]


class FeedbackAction(StrEnum):
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"
    CUSTOM = "CUSTOM"
    MODIFIED = "MODIFIED"


class WorkflowStatus(StrEnum):
    SUBMITTED = "SUBMITTED"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"


class JobState(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    DEAD = "DEAD"


class StorageTier(StrEnum):
    HOT = "HOT"
    WARM = "WARM"
    COLD = "COLD"
    ARCHIVE = "ARCHIVE"


class DataCategory(StrEnum):
    """What a retention policy governs."""

    DOCUMENTS = "DOCUMENTS"
    ANALYSES = "ANALYSES"
    FEEDBACK = "FEEDBACK"
    AUDIT_LOGS = "AUDIT_LOGS"
    SYSTEM_METRICS = "SYSTEM_METRICS"


class WebhookDeliveryStatus(StrEnum):
    """One delivery attempt: waiting to be sent (or being sent), answered 2xx, or not."""

    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
