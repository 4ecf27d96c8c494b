"""What a selection maps to, for the planner (``prism.execution.planner``).

The GraphQL types a registered read may be answered from in one statement, described as data:
each type's table and, for each of its plain fields, the column behind it and how its value
is printed. Fields not described here have logic of their own (the planner's methods) or are
not planned. Also here: walking a selection set as the planner sees it (fragments expanded,
response keys unique), and ``NotPlanned``, the reason an operation goes to the interpreted
path. Nothing here writes SQL; the planner renders these descriptions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    value_from_ast_untyped,
)


class NotPlanned(Exception):
    """The operation (or this request of it) goes to the interpreted path; says why."""


class Kind(Enum):
    """How a column's value is printed in the answer, as the interpreted path prints it."""

    VALUE = "value"  # as it is (numbers, booleans, text, enum names)
    PLAIN = "plain"  # an integer, a boolean or a jsonb value: its SQL text is its JSON
    TIMESTAMP = "timestamp"  # ``datetime.isoformat()`` of a UTC timestamp
    DECIMAL = "decimal"  # a Decimal's text
    OPTIONAL_DECIMAL = "optional decimal"  # a Decimal's text, or null


@dataclass(frozen=True)
class Column:
    """The column behind a field, and how its value is printed."""

    name: str
    kind: Kind = Kind.VALUE


def _timestamp(name: str) -> Column:
    return Column(name, Kind.TIMESTAMP)


def _plain(name: str) -> Column:
    return Column(name, Kind.PLAIN)


@dataclass(frozen=True)
class ObjectType:
    """A GraphQL object type backed by one table's rows."""

    table: str
    scalars: Mapping[str, Column]


DOCUMENT_SCALARS: dict[str, Column] = {
    "filename": Column("filename"),
    "mimeType": Column("mime_type"),
    "fileSize": _plain("file_size"),
    "sha256": Column("sha256"),
    "documentType": Column("document_type"),
    "classification": Column("classification"),
    "languageCode": Column("language_code"),
    "wordCount": _plain("word_count"),
    "pageCount": _plain("page_count"),
    "processingStatus": Column("processing_status"),
    "processingError": Column("processing_error"),
    "createdAt": _timestamp("created_at"),
    "updatedAt": _timestamp("updated_at"),
    "legalHold": _plain("legal_hold"),
    "retentionExpiresAt": _timestamp("retention_expires_at"),
    "storageTier": Column("storage_tier"),
    "totalSections": _plain("total_sections"),
    "totalFeedbackItems": _plain("total_feedback_items"),
    "riskLevel": Column("risk_level"),
    "confidence": Column("confidence"),
    "costUsd": Column("cost_usd", Kind.OPTIONAL_DECIMAL),
}
SECTION_SCALARS: dict[str, Column] = {
    "order": _plain("ord"),
    "wordCount": _plain("word_count"),
    "languageCode": Column("language_code"),
    "textFromOcr": _plain("text_from_ocr"),
    "ocrConfidence": Column("ocr_confidence"),
}
# A section's text: planned only for callers who see it raw and whose reads are not audited.
SECTION_TEXT: dict[str, Column] = {"name": Column("name"), "content": Column("content")}
ANALYSIS_SCALARS: dict[str, Column] = {
    "model": Column("model"),
    "modelVersion": Column("model_version"),
    "startedAt": _timestamp("started_at"),
    "completedAt": _timestamp("completed_at"),
    "durationSeconds": Column("duration_seconds"),
    "riskLevel": Column("risk_level"),
    "confidence": Column("confidence"),
    "tokensUsed": _plain("tokens_used"),
    "costUsd": Column("cost_usd", Kind.DECIMAL),
}
FEEDBACK_SCALARS: dict[str, Column] = {
    "itemId": Column("item_id"),
    "action": Column("action"),
    "category": Column("category"),
    "rating": _plain("rating"),
    "customText": Column("custom_text"),
    "highlightedText": Column("highlighted_text"),
    "workflowStatus": Column("workflow_status"),
    "approvedAt": _timestamp("approved_at"),
    "createdAt": _timestamp("created_at"),
}
USER_SCALARS: dict[str, Column] = {
    "email": Column("email"),
    "firstName": Column("first_name"),
    "lastName": Column("last_name"),
    "role": Column("role"),
    "department": Column("department"),
    "clearance": Column("clearance"),
    "mfaEnabled": _plain("mfa_enabled"),
    "accessExpiresAt": _timestamp("access_expires_at"),
    "lastLoginAt": _timestamp("last_login_at"),
    "createdAt": _timestamp("created_at"),
}


ORGANIZATION_SCALARS: dict[str, Column] = {
    "name": Column("name"),
    "domain": Column("domain"),
    "subscriptionTier": Column("subscription_tier"),
    "dataRetentionDays": _plain("data_retention_days"),
    "createdAt": _timestamp("created_at"),
}
API_TOKEN_SCALARS: dict[str, Column] = {
    "name": Column("name"),
    "prefix": Column("prefix"),
    "scopes": Column("scopes"),
    "expiresAt": _timestamp("expires_at"),
    "lastUsedAt": _timestamp("last_used_at"),
    "revokedAt": _timestamp("revoked_at"),
    "createdAt": _timestamp("created_at"),
}

JOB_SCALARS: dict[str, Column] = {
    "kind": Column("kind"),
    "state": Column("state"),
    "attempts": _plain("attempts"),
    "maxAttempts": _plain("max_attempts"),
    "lastError": Column("last_error"),
    "createdAt": _timestamp("created_at"),
    "updatedAt": _timestamp("updated_at"),
    "runAt": _timestamp("run_at"),
    "startedAt": _timestamp("started_at"),
    "finishedAt": _timestamp("finished_at"),
}

AUDIT_EVENT_SCALARS: dict[str, Column] = {
    "eventType": Column("event_type"),
    "category": Column("category"),
    "description": Column("description"),
    "resourceType": Column("resource_type"),
    "before": _plain("before"),
    "after": _plain("after"),
    "userAgent": Column("user_agent"),
    "requestId": Column("request_id"),
    "createdAt": _timestamp("created_at"),
    "hash": Column("hash"),
    "prevHash": Column("prev_hash"),
}


class ItemKind(Enum):
    """How a key of an analysis's feedback item (a JSON object) is read."""

    TEXT = "text"  # the key's text
    JSON = "json"  # the key's JSON value as it is
    FLOAT = "float"  # the key's text as a float


# FeedbackItem field -> (key in the stored JSON object, how it is read).
ITEM_FIELDS: dict[str, tuple[str, ItemKind]] = {
    "id": ("id", ItemKind.TEXT),
    "category": ("category", ItemKind.JSON),
    "description": ("description", ItemKind.JSON),
    "suggestion": ("suggestion", ItemKind.JSON),
    "riskLevel": ("riskLevel", ItemKind.JSON),
    "confidence": ("confidence", ItemKind.FLOAT),
    "quote": ("quote", ItemKind.JSON),
}
# PiiFinding field -> (key in the stored JSON object, how it is read).
PII_FINDING_FIELDS: dict[str, tuple[str, ItemKind]] = {
    "type": ("type", ItemKind.TEXT),
    "start": ("start", ItemKind.JSON),
    "end": ("end", ItemKind.JSON),
    "confidence": ("confidence", ItemKind.FLOAT),
}
TYPES: dict[str, ObjectType] = {
    "Document": ObjectType("documents", DOCUMENT_SCALARS),
    "Section": ObjectType("document_sections", SECTION_SCALARS),
    "Analysis": ObjectType("analysis_results", ANALYSIS_SCALARS),
    "Feedback": ObjectType("user_feedback", FEEDBACK_SCALARS),
    "User": ObjectType("users", USER_SCALARS),
    "Organization": ObjectType("organizations", ORGANIZATION_SCALARS),
    "ApiToken": ObjectType("api_tokens", API_TOKEN_SCALARS),
    "Job": ObjectType("jobs", JOB_SCALARS),
    "AuditEvent": ObjectType("audit_logs", AUDIT_EVENT_SCALARS),
    # The caller: no table; its fields are the planner's methods (scopes, organization, user,
    # apiToken).
    "Viewer": ObjectType("", {}),
}


# --- selections -----------------------------------------------------------------------------


def response_key(node: FieldNode) -> str:
    """The key a field answers under: its alias, or its name."""
    return node.alias.value if node.alias else node.name.value


def selected_fields(
    selection_set: SelectionSetNode,
    type_name: str,
    fragments: Mapping[str, FragmentDefinitionNode],
) -> list[FieldNode]:
    """The fields selected on ``type_name``, inline fragments and spreads expanded; NotPlanned
    for directives, an unknown fragment, or a response key selected twice (merged by the
    interpreted path)."""
    found: list[FieldNode] = []
    for node in selection_set.selections:
        if node.directives:
            raise NotPlanned("directives")
        if isinstance(node, FieldNode):
            found.append(node)
        elif isinstance(node, InlineFragmentNode):
            on = node.type_condition.name.value if node.type_condition else type_name
            if on == type_name or on == "Node":
                found.extend(selected_fields(node.selection_set, type_name, fragments))
        elif isinstance(node, FragmentSpreadNode):
            fragment = fragments.get(node.name.value)
            if fragment is None:
                raise NotPlanned("unknown fragment")
            on = fragment.type_condition.name.value
            if on == type_name or on == "Node":
                found.extend(selected_fields(fragment.selection_set, type_name, fragments))
    if len(found) > 1 and len({(f.alias or f.name).value for f in found}) != len(found):
        raise NotPlanned("a response key selected twice")
    return found


def with_defaults(
    operation: OperationDefinitionNode, variables: Mapping[str, Any]
) -> dict[str, Any]:
    """The request's variables, plus the operation's default for each one it leaves out, as
    GraphQL's coercion gives them to the interpreted path (an explicit null stays null)."""
    values = dict(variables)
    for definition in operation.variable_definitions or ():
        name = definition.variable.name.value
        if name not in values and definition.default_value is not None:
            values[name] = value_from_ast_untyped(definition.default_value)
    return values
