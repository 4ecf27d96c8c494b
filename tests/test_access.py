"""Roles, token scopes, clearance, the RESTRICTED department rule and PII masking."""

from __future__ import annotations

import httpx
import pytest

from prism.models.enums import Classification, Role
from prism.services import Services
from tests.factories import Tenant, add_document, add_user, codes, gid, gql

LIST = "{ documents(first: 100) { totalCount edges { node { id classification } } } }"
ANALYSIS = """query($id: ID!) {
  document(id: $id) { analyses(first: 1) { edges { node { id feedbackItems { id } } } } }
}"""
SUBMIT = """mutation($input: SubmitFeedbackInput!) {
  submitFeedback(input: $input) { id workflowStatus action author { email } }
}"""
REVIEW = """mutation($id: ID!, $approve: Boolean!) {
  reviewFeedback(input: {id: $id, approve: $approve}) { id workflowStatus approvedBy { email } }
}"""
SECTIONS = """query($id: ID!) {
  document(id: $id) {
    piiSummary { type count }
    sections(first: 10) { edges { node { name content redacted piiFindings { type } } } }
  }
}"""


async def _analysis_id(client: httpx.AsyncClient, tenant: Tenant, document_id: str) -> str:
    body = await gql(client, ANALYSIS, {"id": document_id}, token=tenant.tokens[Role.ADMIN])
    return str(body["data"]["document"]["analyses"]["edges"][0]["node"]["id"])


async def test_lists_and_counts_stop_at_clearance(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    for level in Classification:
        await add_document(services, tenant, classification=level, department="legal")
    expected = {Role.VIEWER: 2, Role.REVIEWER: 3, Role.AUDITOR: 3, Role.ADMIN: 4}
    for role, visible in expected.items():
        body = await gql(client, LIST, token=tenant.tokens[role])
        assert body["data"]["documents"]["totalCount"] == visible, role
        assert len(body["data"]["documents"]["edges"]) == visible, role


async def test_restricted_documents_stay_in_their_department(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    doc = await add_document(
        services, tenant, classification=Classification.RESTRICTED, department="hr"
    )
    _, hr_token = await add_user(
        services, tenant, role=Role.VIEWER, clearance=Classification.RESTRICTED, department="hr"
    )
    _, legal_token = await add_user(
        services,
        tenant,
        role=Role.APPROVER,
        clearance=Classification.RESTRICTED,
        department="legal",
    )
    query = "query($id: ID!) { document(id: $id) { id } }"
    assert (await gql(client, query, {"id": gid("Document", doc.id)}, token=hr_token))["data"][
        "document"
    ]
    assert codes(await gql(client, query, {"id": gid("Document", doc.id)}, token=legal_token)) == [
        "NOT_FOUND"
    ]
    admin = await gql(
        client, query, {"id": gid("Document", doc.id)}, token=tenant.tokens[Role.ADMIN]
    )
    assert admin["data"]["document"] is not None


async def test_above_clearance_is_not_found_everywhere(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    secret = await add_document(services, tenant, classification=Classification.CONFIDENTIAL)
    analysis_id = await _analysis_id(client, tenant, gid("Document", secret.id))
    viewer = tenant.tokens[Role.VIEWER]
    for query, variables in (
        ("query($id: ID!) { document(id: $id) { id } }", {"id": gid("Document", secret.id)}),
        ("query($id: ID!) { node(id: $id) { id } }", {"id": analysis_id}),
    ):
        assert codes(await gql(client, query, variables, token=viewer)) == ["NOT_FOUND"]
    _, low_reviewer = await add_user(
        services, tenant, role=Role.REVIEWER, clearance=Classification.INTERNAL
    )
    body = await gql(
        client,
        SUBMIT,
        {"input": {"analysisId": analysis_id, "action": "ACCEPTED"}},
        token=low_reviewer,
    )
    assert codes(body) == ["NOT_FOUND"]


async def test_feedback_workflow_by_role(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    doc = await add_document(services, tenant, classification=Classification.INTERNAL)
    analysis_id = await _analysis_id(client, tenant, gid("Document", doc.id))
    submit = {"input": {"analysisId": analysis_id, "action": "REJECTED", "rating": 2}}
    # a viewer may not submit feedback
    assert codes(await gql(client, SUBMIT, submit, token=tenant.tokens[Role.VIEWER])) == [
        "FORBIDDEN"
    ]
    # a reviewer may
    body = await gql(client, SUBMIT, submit, token=tenant.tokens[Role.REVIEWER])
    assert body.get("errors") is None, body
    feedback = body["data"]["submitFeedback"]
    assert feedback["workflowStatus"] == "SUBMITTED"
    assert feedback["author"] == {"email": tenant.email(Role.REVIEWER)}
    review = {"id": feedback["id"], "approve": True}
    # a reviewer may not approve; nobody approves their own feedback
    assert codes(await gql(client, REVIEW, review, token=tenant.tokens[Role.REVIEWER])) == [
        "FORBIDDEN"
    ]
    own = await gql(client, SUBMIT, submit, token=tenant.tokens[Role.APPROVER])
    own_review = {"id": own["data"]["submitFeedback"]["id"], "approve": True}
    assert codes(await gql(client, REVIEW, own_review, token=tenant.tokens[Role.APPROVER])) == [
        "FORBIDDEN"
    ]
    # an approver approves once; a second review conflicts
    approved = await gql(client, REVIEW, review, token=tenant.tokens[Role.APPROVER])
    assert approved["data"]["reviewFeedback"]["workflowStatus"] == "APPROVED"
    assert approved["data"]["reviewFeedback"]["approvedBy"] == {
        "email": tenant.email(Role.APPROVER)
    }
    assert codes(await gql(client, REVIEW, review, token=tenant.tokens[Role.ADMIN])) == ["CONFLICT"]


@pytest.mark.parametrize(
    ("variables", "argument"),
    [
        ({"action": "ACCEPTED", "rating": 9}, "rating"),
        ({"action": "CUSTOM"}, "customText"),
        ({"action": "ACCEPTED", "itemId": "no-such-item"}, "itemId"),
    ],
)
async def test_bad_feedback_is_refused(
    client: httpx.AsyncClient,
    services: Services,
    tenant: Tenant,
    variables: dict,
    argument: str,  # type: ignore[type-arg]
) -> None:
    doc = await add_document(services, tenant)
    analysis_id = await _analysis_id(client, tenant, gid("Document", doc.id))
    body = await gql(
        client,
        SUBMIT,
        {"input": {"analysisId": analysis_id, **variables}},
        token=tenant.tokens[Role.REVIEWER],
    )
    assert codes(body) == ["BAD_USER_INPUT"]
    assert body["errors"][0]["extensions"]["argument"] == argument


async def test_token_scopes_narrow_the_role(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    doc = await add_document(services, tenant)
    analysis_id = await _analysis_id(client, tenant, gid("Document", doc.id))
    create = (
        """mutation { createApiToken(input: {name: "ro", scopes: ["documents:read"]}) { token } }"""
    )
    read_only = (await gql(client, create, token=tenant.tokens[Role.ADMIN]))["data"][
        "createApiToken"
    ]["token"]
    body = await gql(
        client,
        SUBMIT,
        {"input": {"analysisId": analysis_id, "action": "ACCEPTED"}},
        token=read_only,
    )
    assert codes(body) == ["FORBIDDEN"]
    assert "feedback:write" in body["errors"][0]["message"]
    assert codes(await gql(client, "{ users { edges { node { id } } } }", token=read_only)) == [
        "FORBIDDEN"
    ]
    assert (await gql(client, LIST, token=read_only))["data"]["documents"]["totalCount"] == 1


@pytest.mark.parametrize("role", list(Role))
async def test_admin_surfaces_by_role(
    client: httpx.AsyncClient, tenant: Tenant, role: Role
) -> None:
    token = tenant.tokens[role]
    users = await gql(client, "{ users { edges { node { email } } } }", token=token)
    audit = await gql(client, "{ auditLog { edges { node { eventType } } } }", token=token)
    may_read = role in (Role.ADMIN, Role.AUDITOR)
    assert (codes(users) == []) is may_read
    assert (codes(audit) == []) is may_read
    create = await gql(
        client,
        """mutation($email: String!) { createUser(input: {email: $email,
             password: "long enough password", role: VIEWER}) { email } }""",
        {"email": f"new-{role.value.lower()}@{tenant.domain}"},
        token=token,
    )
    assert (codes(create) == []) is (role is Role.ADMIN)


async def test_pii_is_masked_below_confidential(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    doc = await add_document(services, tenant, classification=Classification.INTERNAL)
    variables = {"id": gid("Document", doc.id)}
    low = (await gql(client, SECTIONS, variables, token=tenant.tokens[Role.VIEWER]))["data"][
        "document"
    ]
    high = (await gql(client, SECTIONS, variables, token=tenant.tokens[Role.REVIEWER]))["data"][
        "document"
    ]
    liability_low = low["sections"]["edges"][1]["node"]
    liability_high = high["sections"]["edges"][1]["node"]
    assert liability_low["redacted"] is True
    assert "jane.doe@example.com" not in liability_low["content"]
    assert "[EMAIL]" in liability_low["content"]
    assert "[PHONE]" in liability_low["content"]
    assert liability_high["redacted"] is False
    assert "jane.doe@example.com" in liability_high["content"]
    assert {f["type"] for f in liability_low["piiFindings"]} == {"EMAIL", "PHONE"}
    assert sorted((p["type"], p["count"]) for p in low["piiSummary"]) == [
        ("EMAIL", 1),
        ("PHONE", 1),
    ]


async def test_classification_changes_follow_the_rules(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    doc = await add_document(services, tenant, classification=Classification.INTERNAL)
    update = """mutation($input: UpdateDocumentInput!) {
      updateDocument(input: $input) { classification legalHold documentType } }"""
    doc_id = gid("Document", doc.id)
    # reviewers may retype but not reclassify; approvers may not classify above their clearance
    retyped = await gql(
        client,
        update,
        {"input": {"id": doc_id, "documentType": "POLICY"}},
        token=tenant.tokens[Role.REVIEWER],
    )
    assert retyped["data"]["updateDocument"]["documentType"] == "POLICY"
    reclass = {"input": {"id": doc_id, "classification": "CONFIDENTIAL"}}
    assert codes(await gql(client, update, reclass, token=tenant.tokens[Role.REVIEWER])) == [
        "FORBIDDEN"
    ]
    too_high = {"input": {"id": doc_id, "classification": "RESTRICTED"}}
    assert codes(await gql(client, update, too_high, token=tenant.tokens[Role.APPROVER])) == [
        "BAD_USER_INPUT"
    ]
    # legal hold is ADMIN's, and blocks deletion
    hold = {"input": {"id": doc_id, "legalHold": True}}
    assert codes(await gql(client, update, hold, token=tenant.tokens[Role.APPROVER])) == [
        "FORBIDDEN"
    ]
    held = await gql(client, update, hold, token=tenant.tokens[Role.ADMIN])
    assert held["data"]["updateDocument"]["legalHold"] is True
    delete = "mutation($id: ID!) { deleteDocument(id: $id) { deletedId } }"
    assert codes(await gql(client, delete, {"id": doc_id}, token=tenant.tokens[Role.ADMIN])) == [
        "CONFLICT"
    ]
    await gql(
        client,
        update,
        {"input": {"id": doc_id, "legalHold": False}},
        token=tenant.tokens[Role.ADMIN],
    )
    # only the uploader (the reviewer) or an ADMIN deletes
    assert codes(await gql(client, delete, {"id": doc_id}, token=tenant.tokens[Role.APPROVER])) == [
        "FORBIDDEN"
    ]
    deleted = await gql(client, delete, {"id": doc_id}, token=tenant.tokens[Role.REVIEWER])
    assert deleted["data"]["deleteDocument"]["deletedId"] == doc_id
    gone = await gql(
        client,
        "query($id: ID!) { document(id: $id) { id } }",
        {"id": doc_id},
        token=tenant.tokens[Role.ADMIN],
    )
    assert codes(gone) == ["NOT_FOUND"]
