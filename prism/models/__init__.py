"""Tables and query functions. Query functions take the session and a Scope (or the
organization id), flush but never commit: the caller owns the transaction."""

from prism.models.analyses import Analysis
from prism.models.audit import AuditChainHead, AuditEvent
from prism.models.base import TENANT_TABLES, Base
from prism.models.bi import ROLLUPS, Invalidation
from prism.models.data_keys import DataKey
from prism.models.documents import Document, Section
from prism.models.exports import DataExport
from prism.models.feedback import Feedback
from prism.models.governance import QualityRun, RetentionPolicyRow
from prism.models.jobs import Job
from prism.models.lake import LakeWatermark
from prism.models.organizations import Organization
from prism.models.outbox import OutboxConsumer, OutboxCursor, OutboxEvent
from prism.models.registered_operations import OrganizationOperation, RegisteredOperation
from prism.models.throttle import AuthThrottle
from prism.models.users import ApiToken, MfaBackupCode, PasswordReset, RefreshSession, User
from prism.models.webhooks import WebhookDelivery, WebhookEndpoint

metadata = Base.metadata

__all__ = [
    "ROLLUPS",
    "TENANT_TABLES",
    "Analysis",
    "ApiToken",
    "AuditChainHead",
    "AuditEvent",
    "AuthThrottle",
    "Base",
    "DataExport",
    "DataKey",
    "Document",
    "Feedback",
    "Invalidation",
    "Job",
    "LakeWatermark",
    "MfaBackupCode",
    "Organization",
    "OrganizationOperation",
    "OutboxConsumer",
    "OutboxCursor",
    "OutboxEvent",
    "PasswordReset",
    "QualityRun",
    "RefreshSession",
    "RegisteredOperation",
    "RetentionPolicyRow",
    "Section",
    "User",
    "WebhookDelivery",
    "WebhookEndpoint",
    "metadata",
]
