"""The policy against an independent reference model (property-based), its SQL form against
its Python form (exhaustively), and the committed policy table against the code."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from prism.authz.policy import (
    ACTION_SCOPE,
    ROLE_ACTIONS,
    Action,
    Resource,
    can_see,
    decide,
    policy_table,
)
from prism.authz.principal import SCOPES, Principal
from prism.models.documents import Document, read_documents_by_ids
from prism.models.enums import Classification, Role
from prism.services import Services
from tests.factories import Tenant, add_document, codes, gid, gql

ORG = uuid.uuid4()
OTHER_ORG = uuid.uuid4()
USERS = [uuid.uuid4(), uuid.uuid4()]
TOKEN = uuid.uuid4()
DEPARTMENTS = ["legal", "hr", None]
NOW = datetime(2026, 6, 1, tzinfo=UTC)

principals = st.builds(
    Principal,
    organization_id=st.just(ORG),
    user_id=st.sampled_from([*USERS, None]),
    api_token_id=st.none(),
    role=st.sampled_from(Role),
    clearance=st.sampled_from(Classification),
    department=st.sampled_from(DEPARTMENTS),
    scopes=st.one_of(st.none(), st.frozensets(st.sampled_from(sorted(SCOPES)))),
    access_expires_at=st.sampled_from([None, NOW - timedelta(days=1), NOW + timedelta(days=1)]),
).map(
    # Scopes belong to API tokens: a principal with scopes came with a token.
    lambda p: replace(p, api_token_id=TOKEN) if p.scopes is not None else p
)
resources = st.builds(
    Resource,
    organization_id=st.sampled_from([ORG, OTHER_ORG]),
    kind=st.just("Document"),
    classification=st.sampled_from([*Classification, None]),
    department=st.sampled_from(DEPARTMENTS),
    owner_id=st.sampled_from([*USERS, None]),
    legal_hold=st.booleans(),
)

RANK = {"PUBLIC": 0, "INTERNAL": 1, "CONFIDENTIAL": 2, "RESTRICTED": 3}
# The rules as docs/api.md states them, written out again without the module's helpers.
ROLE_MAY = {
    "VIEWER": {
        "organization:read",
        "document:read",
        "user:read",
        "job:read",
        "search:read",
        "token:create",
        "token:revoke",
        "mfa:manage",
        "password:change",
        "user:export",
        "event:read",
    },
}
ROLE_MAY["REVIEWER"] = ROLE_MAY["VIEWER"] | {
    "feedback:submit",
    "document:update",
    "document:delete",
    "document:upload",
    "analysis:run",
}
ROLE_MAY["APPROVER"] = ROLE_MAY["REVIEWER"] | {
    "feedback:review",
    "document:classify",
    "bi:read",
    "operation:read",
}
ROLE_MAY["AUDITOR"] = ROLE_MAY["VIEWER"] | {
    "audit:read",
    "user:list",
    "token:read-all",
    "quality:read",
    "bi:read",
    "operation:read",
}
ROLE_MAY["ADMIN"] = {a.value for a in Action}


def reference(p: Principal, action: Action, r: Resource | None) -> tuple[bool, str]:
    if p.access_expires_at is not None and p.access_expires_at <= NOW:
        return False, "UNAUTHENTICATED"
    if r is not None:
        hidden = r.organization_id != p.organization_id or (
            r.classification is not None
            and (
                RANK[r.classification.value] > RANK[p.clearance.value]
                or (
                    r.classification.value == "RESTRICTED"
                    and p.role.value != "ADMIN"
                    and (p.department is None or p.department != r.department)
                )
            )
        )
        if hidden:
            return False, "NOT_FOUND"
    if action.value not in ROLE_MAY[p.role.value]:
        return False, "FORBIDDEN"
    interactive = (
        "mfa:manage",
        "password:change",
        "user:mfa-reset",
        "user:erase",
        "token:create-service",
    )
    if action.value in interactive and p.api_token_id is not None:
        return False, "FORBIDDEN"
    scope = ACTION_SCOPE[action]
    if p.scopes is not None and scope is not None and scope not in p.scopes:
        return False, "FORBIDDEN"
    if r is not None and action.value in ("document:delete", "token:revoke", "user:export"):
        owner = r.owner_id is not None and p.user_id is not None and r.owner_id == p.user_id
        if p.role.value != "ADMIN" and not owner:
            return False, "FORBIDDEN"
    if r is not None and action.value == "document:delete" and r.legal_hold:
        return False, "CONFLICT"
    return True, "OK"


@settings(max_examples=3000, deadline=None)
@given(principals, st.sampled_from(Action), st.one_of(st.none(), resources))
def test_decide_matches_the_reference_model(
    p: Principal, action: Action, r: Resource | None
) -> None:
    decision = decide(p, action, r, now=NOW)
    assert (decision.allowed, decision.code) == reference(p, action, r)


def test_every_action_has_a_scope_and_roles() -> None:
    assert set(ACTION_SCOPE) == set(Action)
    assert all(scope is None or scope in SCOPES for scope in ACTION_SCOPE.values())
    assert set(ROLE_ACTIONS) == set(Role)


async def test_sql_visibility_agrees_with_the_policy(services: Services, tenant: Tenant) -> None:
    # given a document of every classification × department
    grid: dict[uuid.UUID, Resource] = {}
    async with services.db.transaction(tenant.org_id) as session:
        for classification, department in itertools.product(Classification, DEPARTMENTS):
            document = Document(
                organization_id=tenant.org_id,
                filename="g.txt",
                mime_type="text/plain",
                file_size=1,
                sha256=uuid.uuid4().hex * 2,
                classification=classification,
                department=department,
            )
            session.add(document)
            await session.flush()
            grid[document.id] = Resource(
                organization_id=tenant.org_id,
                kind="Document",
                classification=classification,
                department=department,
            )
    # then every kind of principal sees in SQL exactly what decide() lets it read
    for role, clearance, department in itertools.product(Role, Classification, DEPARTMENTS):
        principal = Principal(
            organization_id=tenant.org_id,
            user_id=None,
            api_token_id=None,
            role=role,
            clearance=clearance,
            department=department,
            scopes=None,
        )
        async with services.db.transaction(tenant.org_id) as session:
            rows = await read_documents_by_ids(session, principal.scope(), list(grid))
        expected = {i for i, r in grid.items() if can_see(principal, r)}
        assert {row.id for row in rows} == expected, (role, clearance, department)
        assert expected == {
            i for i, r in grid.items() if decide(principal, Action.DOCUMENT_READ, r).allowed
        }


def test_committed_policy_table_is_fresh(repo_root: Path) -> None:
    assert (repo_root / "docs" / "policy.md").read_text() == policy_table(), (
        "docs/policy.md is stale: run `prism policy table` and commit it"
    )


EXPLAIN = """query($p: ID!, $a: String!, $r: ID) {
  explainAccess(principalId: $p, action: $a, resourceId: $r) { allowed code reason } }"""


async def test_explain_access_answers_from_the_policy(
    client: httpx.AsyncClient, services: Services, tenant: Tenant, other_tenant: Tenant
) -> None:
    doc = await add_document(services, tenant, classification=Classification.CONFIDENTIAL)
    admin = tenant.tokens[Role.ADMIN]

    async def ask(principal: str, action: str, resource: str | None = None) -> dict[str, Any]:
        body = await gql(client, EXPLAIN, {"p": principal, "a": action, "r": resource}, token=admin)
        return dict(body["data"]["explainAccess"]) if body["data"] else body

    viewer, reviewer = tenant.user_gid(Role.VIEWER), tenant.user_gid(Role.REVIEWER)
    assert (await ask(viewer, "document:read", gid("Document", doc.id)))["code"] == "NOT_FOUND"
    assert (await ask(reviewer, "document:read", gid("Document", doc.id)))["allowed"] is True
    refused = await ask(viewer, "feedback:submit")
    assert (refused["allowed"], refused["code"]) == (False, "FORBIDDEN")
    assert "VIEWER" in refused["reason"]
    # the answer is decide()'s, word for word
    assert (
        refused["reason"]
        == decide(
            Principal(
                organization_id=tenant.org_id,
                user_id=None,
                api_token_id=None,
                role=Role.VIEWER,
                clearance=Classification.INTERNAL,
                department=None,
                scopes=None,
            ),
            Action.FEEDBACK_SUBMIT,
        ).reason
    )
    unknown = await gql(client, EXPLAIN, {"p": viewer, "a": "launch:rockets"}, token=admin)
    assert codes(unknown) == ["BAD_USER_INPUT"]
    elsewhere = await gql(
        client,
        EXPLAIN,
        {"p": other_tenant.user_gid(Role.VIEWER), "a": "document:read"},
        token=admin,
    )
    assert codes(elsewhere) == ["NOT_FOUND"]
    not_admin = await gql(
        client, EXPLAIN, {"p": viewer, "a": "document:read"}, token=tenant.tokens[Role.AUDITOR]
    )
    assert codes(not_admin) == ["FORBIDDEN"]
