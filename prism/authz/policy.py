"""The one place that decides: ``decide(principal, action, resource) -> Decision``.

Read rules are mirrored in SQL by ``prism.models.documents.visible_documents`` (through the
``Scope`` a principal builds), so lists and counts agree with single reads; tests hold the two
to the same answers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from prism.authz.principal import Principal
from prism.errors import Conflict, Forbidden, NotFound, PrismError, Unauthenticated
from prism.models.enums import Classification, Role


class Action(StrEnum):
    ORGANIZATION_READ = "organization:read"
    DOCUMENT_READ = "document:read"
    DOCUMENT_UPDATE = "document:update"
    DOCUMENT_CLASSIFY = "document:classify"
    DOCUMENT_LEGAL_HOLD = "document:legal-hold"
    DOCUMENT_DELETE = "document:delete"
    DOCUMENT_UPLOAD = "document:upload"
    ANALYSIS_RUN = "analysis:run"
    FEEDBACK_SUBMIT = "feedback:submit"
    FEEDBACK_REVIEW = "feedback:review"
    USER_READ = "user:read"
    USER_LIST = "user:list"
    USER_CREATE = "user:create"
    USER_UPDATE = "user:update"
    USER_MFA_RESET = "user:mfa-reset"
    USER_EXPORT = "user:export"
    USER_ERASE = "user:erase"
    MFA_MANAGE = "mfa:manage"
    PASSWORD_CHANGE = "password:change"
    TOKEN_CREATE = "token:create"
    TOKEN_CREATE_SERVICE = "token:create-service"
    TOKEN_READ_ALL = "token:read-all"
    TOKEN_REVOKE = "token:revoke"
    AUDIT_READ = "audit:read"
    JOB_READ = "job:read"
    JOB_ADMIN = "job:admin"
    SEARCH = "search:read"
    RETENTION_READ = "retention:read"
    RETENTION_UPDATE = "retention:update"
    QUALITY_READ = "quality:read"
    BI_READ = "bi:read"
    OPERATION_READ = "operation:read"
    OPERATION_MANAGE = "operation:manage"
    EVENT_READ = "event:read"
    WEBHOOK_MANAGE = "webhook:manage"


_READ = {
    Action.ORGANIZATION_READ,
    Action.DOCUMENT_READ,
    Action.USER_READ,
    Action.JOB_READ,
    Action.SEARCH,
    Action.TOKEN_CREATE,
    Action.TOKEN_REVOKE,
    Action.MFA_MANAGE,
    Action.PASSWORD_CHANGE,
    Action.USER_EXPORT,
    Action.EVENT_READ,
}
# DOCUMENT_DELETE is owned: a reviewer deletes only what they uploaded.
_REVIEW = _READ | {
    Action.FEEDBACK_SUBMIT,
    Action.DOCUMENT_UPDATE,
    Action.DOCUMENT_DELETE,
    Action.DOCUMENT_UPLOAD,
    Action.ANALYSIS_RUN,
}
# BI numbers (cost, throughput, satisfaction, activity) are for those who run the review work
# or oversee it, and for BI tools acting for them; always within the reader's clearance.
_APPROVE = _REVIEW | {
    Action.FEEDBACK_REVIEW,
    Action.DOCUMENT_CLASSIFY,
    Action.BI_READ,
    Action.OPERATION_READ,
}

ROLE_ACTIONS: dict[Role, frozenset[Action]] = {
    Role.VIEWER: frozenset(_READ),
    Role.REVIEWER: frozenset(_REVIEW),
    Role.APPROVER: frozenset(_APPROVE),
    Role.AUDITOR: frozenset(
        _READ
        | {
            Action.AUDIT_READ,
            Action.USER_LIST,
            Action.TOKEN_READ_ALL,
            Action.QUALITY_READ,
            Action.BI_READ,
            Action.OPERATION_READ,
        }
    ),
    Role.ADMIN: frozenset(Action),
}

# The token scope an action needs; None: any token may (it only concerns the token itself).
ACTION_SCOPE: dict[Action, str | None] = {
    Action.ORGANIZATION_READ: None,
    Action.DOCUMENT_READ: "documents:read",
    Action.USER_READ: "documents:read",
    Action.JOB_READ: "documents:read",
    Action.JOB_ADMIN: "users:admin",
    Action.DOCUMENT_UPDATE: "documents:write",
    Action.DOCUMENT_CLASSIFY: "documents:write",
    Action.DOCUMENT_LEGAL_HOLD: "documents:write",
    Action.DOCUMENT_DELETE: "documents:write",
    Action.DOCUMENT_UPLOAD: "documents:write",
    Action.ANALYSIS_RUN: "analysis:run",
    Action.FEEDBACK_SUBMIT: "feedback:write",
    Action.FEEDBACK_REVIEW: "feedback:write",
    Action.USER_LIST: "users:admin",
    Action.USER_CREATE: "users:admin",
    Action.USER_UPDATE: "users:admin",
    Action.USER_MFA_RESET: None,
    Action.USER_EXPORT: "users:admin",
    Action.USER_ERASE: None,
    Action.MFA_MANAGE: None,
    Action.PASSWORD_CHANGE: None,
    Action.TOKEN_CREATE: "tokens:admin",
    Action.TOKEN_CREATE_SERVICE: "tokens:admin",
    Action.TOKEN_READ_ALL: "tokens:admin",
    Action.TOKEN_REVOKE: "tokens:admin",
    Action.AUDIT_READ: "audit:read",
    Action.SEARCH: "search:read",
    Action.RETENTION_READ: "audit:read",
    Action.RETENTION_UPDATE: "users:admin",
    Action.QUALITY_READ: "audit:read",
    Action.BI_READ: "bi:read",
    # The registered operations a BI tool may run; registering and retiring them.
    Action.OPERATION_READ: "bi:read",
    Action.OPERATION_MANAGE: "operations:admin",
    # The live stream of the organization's events; each event also needs its own action.
    Action.EVENT_READ: "events:read",
    # Partners' webhook endpoints: registering, reading, testing them and their deliveries.
    Action.WEBHOOK_MANAGE: "webhooks:admin",
}

# Actions whose resource is owned: the owner may act, others need ADMIN.
# USER_EXPORT: people export their own data; an ADMIN anyone's.
_OWNED = {Action.DOCUMENT_DELETE, Action.TOKEN_REVOKE, Action.USER_EXPORT}
# Second factors and passwords are managed from a signed-in session, never with an API token:
# a leaked token must not be able to turn off (or take over) someone's MFA or password.
# Erasure cannot be undone: a person asks for it, not an automation holding a token. A service
# token outlives whoever made it: a leaked token must not be able to mint credentials that
# survive its revocation.
_INTERACTIVE = {
    Action.MFA_MANAGE,
    Action.PASSWORD_CHANGE,
    Action.USER_MFA_RESET,
    Action.USER_ERASE,
    Action.TOKEN_CREATE_SERVICE,
}
# Actions that change a document's content or existence, refused under legal hold.
_HELD = {Action.DOCUMENT_DELETE}


@dataclass(frozen=True)
class Resource:
    """The attributes of a row the policy looks at."""

    organization_id: uuid.UUID
    kind: str
    classification: Classification | None = None
    department: str | None = None
    owner_id: uuid.UUID | None = None
    legal_hold: bool = False


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    # What a refusal looks like to the client: NOT_FOUND when the caller may not even know
    # the resource exists (another organization, above clearance).
    code: str = "FORBIDDEN"

    def raise_if_denied(self, kind: str = "Resource") -> None:
        if self.allowed:
            return
        error: PrismError
        if self.code == "NOT_FOUND":
            error = NotFound(f"{kind} not found.")
        elif self.code == "UNAUTHENTICATED":
            error = Unauthenticated(self.reason)
        elif self.code == "CONFLICT":
            error = Conflict(self.reason)
        else:
            error = Forbidden(self.reason)
        raise error


def _allow(reason: str) -> Decision:
    return Decision(allowed=True, reason=reason, code="OK")


def can_see(principal: Principal, resource: Resource) -> bool:
    """The read rule, the same one ``Scope`` puts into SQL."""
    if resource.organization_id != principal.organization_id:
        return False
    if resource.classification is None:
        return True
    if resource.classification.rank > principal.clearance.rank:
        return False
    return (
        resource.classification is not Classification.RESTRICTED
        or principal.is_admin
        or (principal.department is not None and resource.department == principal.department)
    )


def decide(
    principal: Principal,
    action: Action,
    resource: Resource | None = None,
    *,
    now: datetime | None = None,
) -> Decision:
    now = now or datetime.now(UTC)
    if principal.access_expires_at is not None and principal.access_expires_at <= now:
        return Decision(False, "Access has expired.", "UNAUTHENTICATED")
    if resource is not None and not can_see(principal, resource):
        return Decision(False, f"{resource.kind} is not visible to the caller.", "NOT_FOUND")
    if action not in ROLE_ACTIONS[principal.role]:
        return Decision(False, f"The {principal.role.value} role may not {action.value}.")
    if action in _INTERACTIVE and principal.api_token_id is not None:
        return Decision(False, f"{action.value} needs a signed-in session, not an API token.")
    needed = ACTION_SCOPE[action]
    if principal.scopes is not None and needed is not None and needed not in principal.scopes:
        return Decision(False, f"The API token lacks the `{needed}` scope.")
    if (
        resource is not None
        and action in _OWNED
        and not principal.is_admin
        and not owns(principal, resource.owner_id)
    ):
        return Decision(False, f"Only the owner or an ADMIN may {action.value}.")
    if resource is not None and action in _HELD and resource.legal_hold:
        return Decision(False, f"The {resource.kind.lower()} is under legal hold.", "CONFLICT")
    return _allow(f"{principal.role.value} may {action.value}.")


@dataclass(frozen=True)
class EventRule:
    """What receiving one type of event needs: the action (and so the role and token scope)
    of reading what it describes, and whether it concerns documents. An event that concerns
    documents is read like a document (clearance, and RESTRICTED within the department); one
    that concerns documents but names no classification (a purge of many, a metrics snapshot
    over all of them) is read as RESTRICTED of no department: only an ADMIN cleared for
    RESTRICTED sees it. An event that concerns none (a sign-in, a token) is read like its audit
    entry in the audit log."""

    action: Action
    documents: bool


_DOCUMENT_EVENT = EventRule(Action.DOCUMENT_READ, documents=True)
_ACCESS_EVENT = EventRule(Action.AUDIT_READ, documents=True)
_AUDIT_EVENT = EventRule(Action.AUDIT_READ, documents=False)

# CloudEvents type -> what receiving it needs. A type not listed is received by nobody (fails
# closed); tests/test_event_subscriptions.py checks that every type the catalog makes is here.
EVENT_RULES: dict[str, EventRule] = {
    **{
        f"prism.document.{name}": _DOCUMENT_EVENT
        for name in (
            "uploaded",
            "analysis_requested",
            "processed",
            "failed",
            "updated",
            "reclassified",
            "legal_hold_changed",
            "deleted",
            "erased",
        )
    },
    **{
        f"prism.feedback.{name}": _DOCUMENT_EVENT
        for name in ("submitted", "reviewed", "approved", "rejected")
    },
    # who read or was refused what: the audit trail of a document
    **{
        f"prism.document.{name}": _ACCESS_EVENT
        for name in ("restricted_read", "original_read", "preview_read", "original_refused")
    },
    # lifecycle changes name documents of every classification
    "prism.lifecycle.transitioned": EventRule(Action.RETENTION_READ, documents=True),
    "prism.lifecycle.purged": EventRule(Action.RETENTION_READ, documents=True),
    "prism.retention.updated": EventRule(Action.RETENTION_READ, documents=False),
    # figures over every document of the organization
    "prism.metrics.snapshot": EventRule(Action.BI_READ, documents=True),
    **{
        f"prism.{name}": _AUDIT_EVENT
        for name in (
            "user.created",
            "user.updated",
            "user.erased",
            "user.export_requested",
            "user.export_ready",
            "user.export_downloaded",
            "auth.signed_in",
            "auth.session_refreshed",
            "auth.refresh_token_reused",
            "auth.signed_out",
            "auth.mfa_enrolment_started",
            "auth.mfa_enabled",
            "auth.mfa_backup_codes_renewed",
            "auth.mfa_disabled",
            "auth.mfa_reset",
            "auth.password_changed",
            "auth.password_reset_requested",
            "auth.password_reset",
            "token.created",
            "token.revoked",
            "organization.created",
            "organization.domain_changed",
            "job.retried",
            "operation.registered",
            "operation.retired",
            "webhook.created",
            "webhook.updated",
            "webhook.disabled",
            "webhook.enabled",
            "webhook.deleted",
            "webhook.secret_rotated",
            "webhook.tested",
            "webhook.redelivered",
        )
    },
}


def may_subscribe_to(principal: Principal, event_type: str) -> bool:
    """Whether the caller's role and token scopes could ever receive events of this type
    (each event is still decided by ``may_receive_event``)."""
    rule = EVENT_RULES.get(event_type)
    return (
        rule is not None
        and decide(principal, Action.EVENT_READ).allowed
        and decide(principal, rule.action).allowed
    )


def may_receive_event(
    principal: Principal,
    *,
    organization_id: uuid.UUID,
    event_type: str,
    classification: Classification | None,
    department: str | None,
) -> bool:
    """Whether one event of the outbox may be delivered to the caller (a live subscription):
    its type's action allowed (role, token scope, access not expired), and what it concerns
    visible to the caller as a read of it would be."""
    rule = EVENT_RULES.get(event_type)
    if rule is None:
        return False
    if rule.documents and classification is None:
        classification, department = Classification.RESTRICTED, None
    event = Resource(organization_id, "Event", classification, department)
    return (
        decide(principal, Action.EVENT_READ).allowed
        and decide(principal, rule.action, event).allowed
    )


def sees_raw_pii(principal: Principal) -> bool:
    """Below CONFIDENTIAL clearance, personal data in text is masked wherever it is shown."""
    return principal.clearance.rank >= Classification.CONFIDENTIAL.rank


def may_open_original(principal: Principal) -> Decision:
    """An original file (or a picture of its pages) shows personal data as it is, while text
    is masked below CONFIDENTIAL clearance: only readers cleared for CONFIDENTIAL open
    originals. Fails closed: PII detection reads text, and an original holds what it cannot
    read (text in pictures, signatures, photographs). The caller has already been allowed to
    read the document."""
    if not sees_raw_pii(principal):
        return Decision(
            False,
            "Originals show personal data as it is, which your clearance shows masked: they "
            "are served only to readers cleared for CONFIDENTIAL.",
        )
    return _allow("The reader sees personal data as it is.")


def owns(principal: Principal, owner_id: uuid.UUID | None) -> bool:
    """A known owner who is the caller: a missing owner never matches a service token's
    missing user."""
    return owner_id is not None and principal.user_id is not None and owner_id == principal.user_id


def check_clearance(principal: Principal | None, clearance: Classification | None) -> None:
    """Nobody hands out more clearance than they hold (ADMINs included): to a user or to a
    service token."""
    if (
        principal is not None
        and clearance is not None
        and clearance.rank > principal.clearance.rank
    ):
        raise Forbidden("You cannot grant a clearance above your own.")


def require(principal: Principal, action: Action, resource: Resource | None = None) -> None:
    decide(principal, action, resource).raise_if_denied(resource.kind if resource else "Resource")


def may_read_token(
    principal: Principal, owner_id: uuid.UUID | None, created_by: uuid.UUID | None
) -> bool:
    """Everyone sees their own tokens; TOKEN_READ_ALL sees the organization's."""
    own = owns(principal, owner_id) or owns(principal, created_by)
    return own or decide(principal, Action.TOKEN_READ_ALL).allowed


def policy_table() -> str:
    """The role × scope × action table of this module, as Markdown (docs/policy.md)."""
    roles = list(Role)
    lines = [
        "# Access policy",
        "",
        "Generated from `prism/authz/policy.py` by `prism policy table`; a test fails when",
        "this file is stale. ✓: the role may; the token scope is what an API token also",
        "needs (a token's scopes narrow its role, never widen it).",
        "",
        "| action | token scope | " + " | ".join(r.value for r in roles) + " |",
        "|---|---|" + "---|" * len(roles),
    ]
    for action in Action:
        cells = ["✓" if action in ROLE_ACTIONS[role] else "" for role in roles]
        if action in _INTERACTIVE:
            scope = "no token: signed-in session only"
        else:
            scope = f"`{ACTION_SCOPE[action] or '(any)'}`"
        lines.append(f"| `{action.value}` | {scope} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "On every action with a resource, before the role is looked at:",
        "",
        "- a resource of another organization, or above the caller's clearance",
        "  (PUBLIC < INTERNAL < CONFIDENTIAL < RESTRICTED), or RESTRICTED and of another",
        "  department (unless ADMIN), is `NOT_FOUND`, exactly like a missing one;",
        "- expired access (`accessExpiresAt`) is `UNAUTHENTICATED`.",
        "",
        "Then: "
        + ", ".join(f"`{a.value}`" for a in sorted(_OWNED))
        + " need the owner or an ADMIN (an unknown owner matches nobody); "
        + ", ".join(f"`{a.value}`" for a in sorted(_HELD))
        + " under legal hold is `CONFLICT`. Nobody grants a clearance above their own;",
        "feedback is reviewed by a person other than its author; text shows personal data",
        "only to CONFIDENTIAL clearance and above.",
        "",
        "| clearance | sees classifications |",
        "|---|---|",
    ]
    for level in Classification:
        lines.append(f"| {level.value} | " + ", ".join(c.value for c in level.at_most()) + " |")
    lines += [
        "",
        "## Live events (`events` subscription)",
        "",
        f"Each event also needs `{Action.EVENT_READ.value}` (token scope "
        f"`{ACTION_SCOPE[Action.EVENT_READ]}`). An event that concerns documents is decided as",
        "a read of them (its classification and department); one without a classification is",
        "read as RESTRICTED of no department (an ADMIN cleared for RESTRICTED only). A type",
        "not listed reaches nobody.",
        "",
        "| event type | action | concerns documents |",
        "|---|---|---|",
    ]
    for event_type, rule in sorted(EVENT_RULES.items()):
        concerns = "yes" if rule.documents else "no"
        lines.append(f"| `{event_type}` | `{rule.action.value}` | {concerns} |")
    return "\n".join(lines) + "\n"
