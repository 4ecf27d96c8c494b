"""The events Prism publishes: their CloudEvents types, topics, and what their data may carry.

Every audited change becomes one event (``audit.record`` writes it in the change's own
transaction), and the relay's periodic metrics snapshots are events too. An event is a
CloudEvents 1.0 document (structured JSON) whose ``data`` holds identifiers, the
classification of what it concerns and figures: never text a person wrote or a document holds
(file names, section text, e-mail addresses, names, error messages, descriptions). What an
event carries is allowed field by field below (``Kind.figures``), and every value is checked
again by shape (numbers, booleans, identifiers, UUIDs, timestamps), so an allowed field that
one day holds text still cannot carry it out.

Extension attributes: ``organizationid`` (the key of the Kafka message), ``sequence`` (the
event's position in its organization's stream: 1, 2, 3, … without gaps; a decimal string, as
the CloudEvents sequence extension says), ``classification`` and ``department`` (absent when
the event concerns nothing classified) so consumers can filter by clearance (a department is
an organization's own label of its teams, not a person's), and ``traceparent`` (the
CloudEvents distributed-tracing extension: the trace of the change, when tracing is on).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prism import tracing
from prism.models.outbox import Draft

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
# The three topics (before PRISM_KAFKA_TOPIC_PREFIX).
DOCUMENT_EVENTS = "document-events"
USER_INTERACTIONS = "user-interactions"
SYSTEM_METRICS = "system-metrics"
TOPICS = (DOCUMENT_EVENTS, USER_INTERACTIONS, SYSTEM_METRICS)
# The type of the relay's periodic snapshots (topic system-metrics).
METRICS_SNAPSHOT = "prism.metrics.snapshot"


@dataclass(frozen=True)
class Kind:
    """What an audit event type becomes: its CloudEvents type, its topic, and the keys of the
    audit event's ``after`` (and ``before``, as ``previous``) copied into ``data``."""

    type: str
    topic: str
    figures: tuple[str, ...] = ()
    previous: tuple[str, ...] = ()


def _doc(name: str, *figures: str, previous: tuple[str, ...] = ()) -> Kind:
    return Kind(f"prism.document.{name}", DOCUMENT_EVENTS, figures, previous)


def _user(prefix: str, name: str, *figures: str, previous: tuple[str, ...] = ()) -> Kind:
    return Kind(f"prism.{prefix}.{name}", USER_INTERACTIONS, figures, previous)


_RETENTION = ("hot_days", "warm_days", "cold_days", "archive_days", "delete_after_days")

# audit event type -> Kind (tests/test_outbox.py checks every type the code records is here).
KINDS: dict[str, Kind] = {
    # documents: uploaded, processed, failed, updated / reclassified, legal hold, deleted, erased
    "document.upload": _doc("uploaded", "size", "classification"),
    "document.analyze": _doc("analysis_requested", "analyzer", "jobId"),
    "document.analyzed": _doc(
        "processed",
        "riskLevel",
        "feedbackItems",
        "sections",
        "costUsd",
        "tokensUsed",
        "durationSeconds",
        "jobId",
    ),
    "document.failed": _doc("failed", "job"),
    "document.update": _doc(
        "updated", "documentType", "classification", previous=("documentType", "classification")
    ),
    "document.legal_hold": _doc(
        "legal_hold_changed",
        "legalHold",
        "documentType",
        "classification",
        previous=("legalHold", "classification"),
    ),
    "document.delete": _doc("deleted", previous=("documentType", "classification", "legalHold")),
    "document.erase": _doc("erased", "cleanupJobId"),
    "document.read_restricted": _user("document", "restricted_read"),
    "document.original_read": _user("document", "original_read"),
    "document.preview_read": _user("document", "preview_read"),
    "document.original_refused": _user("document", "original_refused"),
    # review
    "feedback.submit": Kind("prism.feedback.submitted", DOCUMENT_EVENTS, ("action", "rating")),
    "feedback.review": Kind(
        "prism.feedback.reviewed", DOCUMENT_EVENTS, ("workflowStatus",), ("workflowStatus",)
    ),
    # governance
    "retention.update": Kind(
        "prism.retention.updated",
        DOCUMENT_EVENTS,
        (*_RETENTION, "documentsRescheduled"),
        _RETENTION,
    ),
    "lifecycle.transition": Kind("prism.lifecycle.transitioned", DOCUMENT_EVENTS, ("transitions",)),
    "lifecycle.purge": Kind(
        "prism.lifecycle.purged",
        DOCUMENT_EVENTS,
        ("category", "count", "documentIds", "before", "deleteAfterDays"),
    ),
    # users, sign-in, MFA, tokens, exports, erasure
    "user.create": _user("user", "created", "role", "clearance", "isActive"),
    "user.update": _user(
        "user",
        "updated",
        "role",
        "clearance",
        "isActive",
        "accessExpiresAt",
        previous=("role", "clearance", "isActive", "accessExpiresAt"),
    ),
    "user.erase": _user(
        "user",
        "erased",
        "documentsDeleted",
        "documentsKeptForLegalHold",
        "auditEventsRetained",
        "cleanupJobId",
    ),
    "user.export": _user("user", "export_requested", "exportId", "jobId"),
    "user.export_ready": _user("user", "export_ready", "exportId", "bytes", "documents"),
    "user.export_download": _user("user", "export_downloaded", "exportId"),
    "auth.login": _user("auth", "signed_in"),
    "auth.refresh": _user("auth", "session_refreshed"),
    "auth.refresh_reused": _user("auth", "refresh_token_reused"),
    "auth.logout": _user("auth", "signed_out"),
    "auth.mfa_enrolment": _user("auth", "mfa_enrolment_started"),
    "auth.mfa_enabled": _user("auth", "mfa_enabled"),
    "auth.mfa_backup_codes": _user("auth", "mfa_backup_codes_renewed"),
    "auth.mfa_disabled": _user("auth", "mfa_disabled"),
    "auth.mfa_reset": _user("auth", "mfa_reset"),
    "auth.password_changed": _user("auth", "password_changed"),
    "auth.password_reset_requested": _user("auth", "password_reset_requested"),
    "auth.password_reset": _user("auth", "password_reset"),
    "token.create": _user(
        "token", "created", "scopes", "expiresAt", "service", "role", "clearance"
    ),
    "token.revoke": _user("token", "revoked"),
    "organization.create": _user("organization", "created"),
    "organization.domain": _user("organization", "domain_changed"),
    "job.retry": _user("job", "retried", "jobs"),
    # an organization's registered operations (its dashboards' queries)
    "operation.registered": _user("operation", "registered"),
    "operation.retired": _user("operation", "retired"),
    # partners' webhooks (prism.webhook.disabled also when Prism disables a failing endpoint)
    "webhook.create": _user("webhook", "created", "clearance", "enabled"),
    "webhook.update": _user("webhook", "updated"),
    "webhook.disable": _user("webhook", "disabled", "automatic", "failingSince"),
    "webhook.enable": _user("webhook", "enabled"),
    "webhook.delete": _user("webhook", "deleted"),
    "webhook.rotate_secret": _user("webhook", "secret_rotated", "previousSecretUntil"),
    "webhook.test": _user("webhook", "tested", "deliveryId"),
    "webhook.redeliver": _user("webhook", "redelivered", "deliveryId", "eventId"),
}

# The type of a webhook's test ping (sent to the one endpoint, never written to the outbox).
WEBHOOK_PING = "prism.webhook.ping"

# The feedback review's outcome names its event: approved or rejected.
_REVIEW_OUTCOMES = {"APPROVED": "prism.feedback.approved", "REJECTED": "prism.feedback.rejected"}

# Every CloudEvents type the outbox holds (what a live subscription may ask for).
RECLASSIFIED = "prism.document.reclassified"
TYPES: frozenset[str] = frozenset(
    {kind.type for kind in KINDS.values()}
    | set(_REVIEW_OUTCOMES.values())
    | {RECLASSIFIED, METRICS_SNAPSHOT}
)

# Values an event may carry: numbers, booleans, None, and strings of these shapes only.
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})?)?$")
_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_:]{0,47}$")
_NUMBER = re.compile(r"^-?\d{1,18}(\.\d{1,9})?$")
MAX_ITEMS = 100


def safe_value(value: Any) -> Any:
    """``value`` if it has a shape that cannot be text (else None), recursively."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        if any(p.match(value) for p in (_UUID, _TIMESTAMP, _IDENTIFIER, _NUMBER)):
            return value
        return None
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {
            str(k): safe_value(v)
            for k, v in list(value.items())[:MAX_ITEMS]
            if isinstance(k, str) and _IDENTIFIER.match(k)
        }
    if isinstance(value, list | tuple):
        return [safe_value(v) for v in value[:MAX_ITEMS]]
    return None


def _figures(source: Mapping[str, Any] | None, keys: tuple[str, ...]) -> dict[str, Any]:
    if not source:
        return {}
    return {k: safe_value(source[k]) for k in keys if k in source}


def event_types() -> frozenset[str]:
    """Every CloudEvents type Prism writes (what a webhook may subscribe to)."""
    types = {kind.type for kind in KINDS.values()}
    types.update(_REVIEW_OUTCOMES.values())
    types.update({"prism.document.reclassified", METRICS_SNAPSHOT, WEBHOOK_PING})
    return frozenset(types)


def kind_of(event_type: str) -> Kind:
    """The event type's entry; one missing (tests/test_outbox.py checks none is) still makes an
    event, of ids and classification only, rather than failing the change."""
    found = KINDS.get(event_type)
    if found is not None:
        return found
    area, _, name = event_type.partition(".")
    clean = [re.sub(r"[^a-z_]", "_", part.lower()) or "unknown" for part in (area, name)]
    topic = DOCUMENT_EVENTS if area in ("document", "feedback") else USER_INTERACTIONS
    return Kind(f"prism.{clean[0]}.{clean[1]}", topic)


def source_of(organization_id: uuid.UUID) -> str:
    return f"/prism/organizations/{organization_id}"


def envelope(
    *,
    event_id: uuid.UUID,
    organization_id: uuid.UUID,
    type: str,
    topic: str,
    time: datetime,
    subject: str | None,
    classification: str | None,
    department: str | None,
    data: dict[str, Any],
) -> Draft:
    """A CloudEvents 1.0 structured event (without ``sequence``, added at insert)."""
    event: dict[str, Any] = {
        "specversion": SPEC_VERSION,
        "id": str(event_id),
        "source": source_of(organization_id),
        "type": type,
        "time": time.isoformat().replace("+00:00", "Z"),
        "datacontenttype": CONTENT_TYPE,
        "organizationid": str(organization_id),
    }
    if subject is not None:
        event["subject"] = subject
    if classification is not None:
        event["classification"] = classification
    if department is not None:
        event["department"] = department
    traceparent = tracing.current_traceparent()
    if traceparent is not None:
        # The CloudEvents distributed-tracing extension: the change's trace.
        event["traceparent"] = traceparent
    event["data"] = data
    return Draft(
        id=event_id,
        organization_id=organization_id,
        topic=topic,
        type=type,
        classification=classification,
        department=department,
        time=time,
        event=event,
    )


def from_audit(
    *,
    event_id: uuid.UUID,
    organization_id: uuid.UUID,
    time: datetime,
    event_type: str,
    actor_user_id: uuid.UUID | None,
    actor_api_token_id: uuid.UUID | None,
    resource_type: str | None,
    resource_id: uuid.UUID | None,
    classification: str | None,
    department: str | None,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
) -> Draft:
    """The event of an audit event (the same id: a consumer can find the audit entry)."""
    kind = kind_of(event_type)
    type_ = kind.type
    if event_type == "feedback.review" and after:
        type_ = _REVIEW_OUTCOMES.get(str(after.get("workflowStatus")), type_)
    if (
        event_type == "document.update"
        and before
        and after
        and before.get("classification") != after.get("classification")
    ):
        type_ = RECLASSIFIED
    data: dict[str, Any] = {"organizationId": str(organization_id)}
    if event_type in KINDS:
        data["auditEventType"] = event_type
    if resource_type is not None:
        data["resourceType"] = safe_value(resource_type)
    if resource_id is not None:
        data["resourceId"] = str(resource_id)
    if actor_user_id is not None or actor_api_token_id is not None:
        data["actor"] = {
            "userId": str(actor_user_id) if actor_user_id else None,
            "apiTokenId": str(actor_api_token_id) if actor_api_token_id else None,
        }
    if classification is not None:
        data["classification"] = classification
    data.update(_figures(after, kind.figures))
    previous = _figures(before, kind.previous)
    if previous:
        data["previous"] = previous
    subject = (
        f"{resource_type}/{resource_id}" if resource_type is not None and resource_id else None
    )
    return envelope(
        event_id=event_id,
        organization_id=organization_id,
        type=type_,
        topic=kind.topic,
        time=time,
        subject=subject,
        classification=classification,
        department=department,
        data=data,
    )
