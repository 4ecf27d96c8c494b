"""Nothing of one organization reaches another: every node type, list and mutation."""

from __future__ import annotations

import uuid

import httpx
import pytest
from graphql import GraphQLInputObjectType, GraphQLInputType, get_named_type

from prism.models.enums import Classification, Role
from prism.schema import build_schema
from prism.services import Services
from tests.factories import PASSWORD, Tenant, add_document, codes, gid, gql
from tests.webhook_receiver import victim_webhook

NODE = "query($id: ID!) { node(id: $id) { id } }"
NODES = "query($ids: [ID!]!) { nodes(ids: $ids) { id } }"
DOCUMENT = "query($id: ID!) { document(id: $id) { id } }"
JOB = "query($id: ID!) { job(id: $id) { id } }"
LISTS = """{
  documents(first: 100) { totalCount edges { node { id } } }
  users(first: 100) { edges { node { id email } } }
  apiTokens { id }
  auditLog(first: 100) { edges { node { id resourceId } } }
}"""
ANALYSIS_AND_FEEDBACK = """query($id: ID!) {
  document(id: $id) {
    analyses(first: 1) { edges { node { id feedbackItems { id } } } }
    sections(first: 1) { edges { node { id } } }
  }
}"""
SUBMIT = """mutation($input: SubmitFeedbackInput!) { submitFeedback(input: $input) { id } }"""


async def _a_world(services: Services, client: httpx.AsyncClient, victim: Tenant) -> dict[str, str]:
    """IDs of one object of every type in ``victim``'s organization."""
    document = await add_document(services, victim, classification=Classification.PUBLIC)
    token = victim.tokens[Role.ADMIN]
    body = await gql(
        client, ANALYSIS_AND_FEEDBACK, {"id": gid("Document", document.id)}, token=token
    )
    analysis = body["data"]["document"]["analyses"]["edges"][0]["node"]
    section = body["data"]["document"]["sections"]["edges"][0]["node"]
    reviewer = victim.tokens[Role.REVIEWER]
    feedback = await gql(
        client,
        SUBMIT,
        {"input": {"analysisId": analysis["id"], "action": "ACCEPTED"}},
        token=reviewer,
    )
    audit = await gql(client, "{ auditLog(first: 1) { edges { node { id } } } }", token=token)
    tokens = await gql(client, "{ apiTokens { id } }", token=token)
    viewer = await gql(client, "{ viewer { organization { id } } }", token=token)
    return {
        "Document": gid("Document", document.id),
        "Section": section["id"],
        "Analysis": analysis["id"],
        "Feedback": feedback["data"]["submitFeedback"]["id"],
        "User": victim.user_gid(Role.VIEWER),
        "AuditEvent": audit["data"]["auditLog"]["edges"][0]["node"]["id"],
        "ApiToken": tokens["data"]["apiTokens"][0]["id"],
        "Organization": viewer["data"]["viewer"]["organization"]["id"],
    }


@pytest.fixture
async def victim_ids(
    services: Services, client: httpx.AsyncClient, other_tenant: Tenant
) -> dict[str, str]:
    return await _a_world(services, client, other_tenant)


async def test_node_of_another_organization_is_not_found(
    client: httpx.AsyncClient, tenant: Tenant, victim_ids: dict[str, str]
) -> None:
    token = tenant.tokens[Role.ADMIN]
    for type_name, global_id in victim_ids.items():
        body = await gql(client, NODE, {"id": global_id}, token=token)
        assert body["data"]["node"] is None, type_name
        assert codes(body) == ["NOT_FOUND"], (type_name, body)
    body = await gql(client, NODES, {"ids": list(victim_ids.values())}, token=token)
    assert body["data"]["nodes"] == [None] * len(victim_ids)
    assert codes(body) == ["NOT_FOUND"] * len(victim_ids)


async def test_document_and_job_of_another_organization_are_not_found(
    client: httpx.AsyncClient, tenant: Tenant, victim_ids: dict[str, str]
) -> None:
    token = tenant.tokens[Role.ADMIN]
    body = await gql(client, DOCUMENT, {"id": victim_ids["Document"]}, token=token)
    assert codes(body) == ["NOT_FOUND"]
    body = await gql(client, JOB, {"id": gid("Job", uuid.uuid4())}, token=token)
    assert codes(body) == ["NOT_FOUND"]


async def test_lists_show_only_own_organization(
    client: httpx.AsyncClient, services: Services, tenant: Tenant, victim_ids: dict[str, str]
) -> None:
    own = await add_document(services, tenant, classification=Classification.PUBLIC)
    body = await gql(client, LISTS, token=tenant.tokens[Role.ADMIN])
    assert body.get("errors") is None, body
    data = body["data"]
    assert [e["node"]["id"] for e in data["documents"]["edges"]] == [gid("Document", own.id)]
    assert data["documents"]["totalCount"] == 1
    emails = {e["node"]["email"] for e in data["users"]["edges"]}
    assert emails == {u.email for u in tenant.users.values()}
    assert victim_ids["ApiToken"] not in {t["id"] for t in data["apiTokens"]}
    audit_ids = {e["node"]["id"] for e in data["auditLog"]["edges"]}
    assert victim_ids["AuditEvent"] not in audit_ids
    assert victim_ids["Document"] not in {
        e["node"]["resourceId"] for e in data["auditLog"]["edges"]
    }


MUTATIONS = {
    "updateDocument": (
        "mutation($id: ID!) { updateDocument(input: {id: $id, documentType: REPORT}) { id } }",
        "Document",
    ),
    "deleteDocument": ("mutation($id: ID!) { deleteDocument(id: $id) { deletedId } }", "Document"),
    "submitFeedback": (
        "mutation($id: ID!) { submitFeedback(input: {analysisId: $id, action: ACCEPTED}) { id } }",
        "Analysis",
    ),
    "reviewFeedback": (
        "mutation($id: ID!) { reviewFeedback(input: {id: $id, approve: true}) { id } }",
        "Feedback",
    ),
    "revokeApiToken": ("mutation($id: ID!) { revokeApiToken(id: $id) { id } }", "ApiToken"),
    "updateUser": (
        "mutation($id: ID!) { updateUser(input: {id: $id, role: ADMIN}) { id } }",
        "User",
    ),
    "analyzeDocument": (
        "mutation($id: ID!) { analyzeDocument(input: {documentId: $id}) { job { id } } }",
        "Document",
    ),
    "resetUserMfa": ("mutation($id: ID!) { resetUserMfa(userId: $id) { id } }", "User"),
    "exportUserData": ("mutation($id: ID!) { exportUserData(userId: $id) { id } }", "User"),
    "eraseUser": ("mutation($id: ID!) { eraseUser(userId: $id) { subjectId } }", "User"),
    "retireOperation": (
        "mutation($id: ID!) { retireOperation(id: $id) { id } }",
        "RegisteredOperation",
    ),
    "updateWebhook": (
        'mutation($id: ID!) { updateWebhook(id: $id, description: "x") { id } }',
        "Webhook",
    ),
    "disableWebhook": ("mutation($id: ID!) { disableWebhook(id: $id) { id } }", "Webhook"),
    "enableWebhook": ("mutation($id: ID!) { enableWebhook(id: $id) { id } }", "Webhook"),
    "deleteWebhook": ("mutation($id: ID!) { deleteWebhook(id: $id) { deletedId } }", "Webhook"),
    "rotateWebhookSecret": (
        "mutation($id: ID!) { rotateWebhookSecret(id: $id) { secret } }",
        "Webhook",
    ),
    "testWebhook": ("mutation($id: ID!) { testWebhook(id: $id) { id } }", "Webhook"),
    "redeliverWebhook": (
        "mutation($id: ID!) { redeliverWebhook(deliveryId: $id) { id } }",
        "WebhookDelivery",
    ),
}
REGISTER = """mutation($d: String!) { registerOperations(document: $d) { id } }"""
OPERATIONS = "{ registeredOperations { id retiredAt } }"
# Root query fields taking an ID, and the test that sends them another organization's.
QUERIES = {
    "node": "test_node_of_another_organization_is_not_found",
    "nodes": "test_node_of_another_organization_is_not_found",
    "document": "test_document_and_job_of_another_organization_are_not_found",
    "job": "test_document_and_job_of_another_organization_are_not_found",
    "documents": "test_filters_naming_another_organization_find_nothing",
    "auditLog": "test_filters_naming_another_organization_find_nothing",
    "explainAccess": "tests/test_policy.py::test_explain_access_answers_from_the_policy",
    "search": "tests/test_search.py::test_filters_narrow_within_the_visible",
    "erasureStatus": "tests/test_dead_jobs.py::test_erasure_status_of_another_organization",
    "webhookDeliveries": "tests/test_webhooks.py::"
    "test_deliveries_of_another_organization_s_webhook_are_not_found",
}


def _takes_an_id(argument_type: GraphQLInputType) -> bool:
    named = get_named_type(argument_type)
    if named.name == "ID":
        return True
    if isinstance(named, GraphQLInputObjectType):
        return any(_takes_an_id(f.type) for f in named.fields.values())
    return False


def test_every_root_field_taking_an_id_is_tried_across_organizations() -> None:
    schema = build_schema()._schema
    for root, covered in ((schema.query_type, QUERIES), (schema.mutation_type, MUTATIONS)):
        assert root is not None
        taking_ids = {
            name
            for name, field in root.fields.items()
            if any(_takes_an_id(arg.type) for arg in field.args.values())
        }
        assert taking_ids == set(covered), f"{root.name}: cover {taking_ids ^ set(covered)}"


async def test_filters_naming_another_organization_find_nothing(
    client: httpx.AsyncClient, tenant: Tenant, victim_ids: dict[str, str]
) -> None:
    body = await gql(
        client,
        """query($user: ID!, $doc: ID!) {
          documents(filter: {uploadedBy: $user}) { totalCount }
          auditLog(first: 10, filter: {resourceId: $doc}) { edges { node { id } } } }""",
        {"user": victim_ids["User"], "doc": victim_ids["Document"]},
        token=tenant.tokens[Role.ADMIN],
    )
    assert body["data"] == {"documents": {"totalCount": 0}, "auditLog": {"edges": []}}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
async def test_mutation_on_another_organization_is_not_found_and_changes_nothing(
    services: Services,
    client: httpx.AsyncClient,
    tenant: Tenant,
    other_tenant: Tenant,
    victim_ids: dict[str, str],
    mutation: str,
) -> None:
    document, type_name = MUTATIONS[mutation]
    victim_ids = dict(victim_ids)
    if type_name == "RegisteredOperation":  # not a Node: one made for this test
        made = await gql(
            client,
            REGISTER,
            {"d": f"query Victim{uuid.uuid4().hex} {{ viewer {{ scopes }} }}"},
            token=other_tenant.tokens[Role.ADMIN],
        )
        victim_ids[type_name] = made["data"]["registerOperations"][0]["id"]
    if type_name in ("Webhook", "WebhookDelivery"):  # not Nodes: made for this test
        victim_ids["Webhook"], victim_ids["WebhookDelivery"] = await victim_webhook(
            services, other_tenant
        )
    # An ADMIN's signed-in session: it may do everything (API tokens may not manage MFA).
    signed_in = await gql(
        client,
        "mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) { "
        "accessToken } }",
        {"e": tenant.email(Role.ADMIN), "p": PASSWORD},
    )
    admin = signed_in["data"]["login"]["accessToken"]
    body = await gql(client, document, {"id": victim_ids[type_name]}, token=admin)
    assert codes(body) == ["NOT_FOUND"], body
    # the victim's objects are untouched
    if type_name == "RegisteredOperation":
        theirs = await gql(client, OPERATIONS, token=other_tenant.tokens[Role.ADMIN])
        live = {o["id"] for o in theirs["data"]["registeredOperations"] if not o["retiredAt"]}
        assert victim_ids[type_name] in live
        return
    if type_name in ("Webhook", "WebhookDelivery"):
        theirs = await gql(
            client, "{ webhooks { id enabled description } }", token=other_tenant.tokens[Role.ADMIN]
        )
        assert theirs["data"]["webhooks"] == [
            {"id": victim_ids["Webhook"], "enabled": True, "description": ""}
        ]
        deliveries = await gql(
            client,
            "query($id: ID!) { webhookDeliveries(webhookId: $id) { edges { node { id } } } }",
            {"id": victim_ids["Webhook"]},
            token=other_tenant.tokens[Role.ADMIN],
        )
        assert len(deliveries["data"]["webhookDeliveries"]["edges"]) == 1
        return
    check = await gql(
        client,
        "query($id: ID!) { node(id: $id) { id } }",
        {"id": victim_ids[type_name]},
        token=other_tenant.tokens[Role.ADMIN],
    )
    assert check["data"]["node"] == {"id": victim_ids[type_name]}
