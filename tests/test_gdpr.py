"""GDPR: a person's export bundle (built by a job, sealed at rest, served by a signed and
expiring link), and erasure: nothing of the person remains in any text or JSON column of any
table outside what the receipt lists as kept, and the audit chain still verifies."""

from __future__ import annotations

import io
import uuid
import zipfile
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import orjson
from sqlalchemy.engine import make_url

from prism.audit import OPERATOR
from prism.authz.principal import SCOPES
from prism.execution.ids import from_global_id
from prism.identity import users as identity_users
from prism.models.enums import Classification, FeedbackAction, Role
from prism.models.feedback import Feedback, create_feedback
from prism.services import Services
from prism.tokens import api_tokens
from tests.factories import PASSWORD, Tenant, add_document, add_user, codes, gid, gql
from tests.pipeline_helpers import run_jobs, upload

EXPORT = """mutation($id: ID!) { exportUserData(userId: $id) {
  id state downloadUrl expiresAt subject { id } } }"""
EXPORT_NODE = """query($id: ID!) { node(id: $id) { ... on DataExport {
  id state downloadUrl expiresAt } } }"""
ERASE = """mutation($id: ID!) { eraseUser(userId: $id) {
  subjectId erasedAt documentsDeleted documentsKeptForLegalHold auditEventId
  auditEventsRetained retained } }"""
LOGIN = """mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) {
  accessToken } }"""
SUBMIT = """mutation($input: SubmitFeedbackInput!) { submitFeedback(input: $input) { id } }"""
ANALYSES = (
    """query($id: ID!) { document(id: $id) { analyses(first: 1) { edges { node { id } } } } }"""
)
HOLD = """mutation($id: ID!) { updateDocument(input: {id: $id, legalHold: true}) { legalHold } }"""


async def _person(services: Services, tenant: Tenant) -> tuple[Any, str, dict[str, str]]:
    tag = uuid.uuid4().hex[:8]
    marks = {
        "email": f"zelda.{tag}@{tenant.domain}",
        "first": f"Zelda{tag}",
        "last": f"Quixote{tag}",
    }
    user = await identity_users.add_user(
        services,
        OPERATOR,
        tenant.org_id,
        email=marks["email"],
        password=PASSWORD,
        role=Role.REVIEWER,
        clearance=Classification.CONFIDENTIAL,
        department="legal",
        first_name=marks["first"],
        last_name=marks["last"],
    )
    created = await api_tokens.create_token(
        services,
        OPERATOR,
        tenant.org_id,
        name="zelda",
        scopes=sorted(SCOPES),
        user_email=marks["email"],
    )
    return user, created.secret, marks


async def _upload(client: httpx.AsyncClient, token: str, text: str, name: str) -> str:
    response = await upload(client, token, name, text.encode(), classification="CONFIDENTIAL")
    body = response.json()
    assert body.get("errors") is None, body
    return str(body["data"]["uploadDocument"]["document"]["id"])


async def _export(
    client: httpx.AsyncClient, services: Services, token: str, user_gid: str
) -> dict[str, Any]:
    body = await gql(client, EXPORT, {"id": user_gid}, token=token)
    assert body.get("errors") is None, body
    queued = body["data"]["exportUserData"]
    assert queued["state"] == "QUEUED"
    assert queued["downloadUrl"] is None
    await run_jobs(services)
    body = await gql(client, EXPORT_NODE, {"id": queued["id"]}, token=token)
    node: dict[str, Any] = body["data"]["node"]
    return node


async def test_export_bundle_holds_the_person_and_is_sealed_at_rest(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    user, token, marks = await _person(services, tenant)
    text = f"NOTICE\n\nPersonal file of {marks['first']} {uuid.uuid4()}.\n"
    document_id = await _upload(client, token, text, "notice.txt")
    await run_jobs(services)
    user_gid = gid("User", user.id)

    export = await _export(client, services, token, user_gid)

    assert export["state"] == "SUCCEEDED"
    url = urlsplit(export["downloadUrl"])
    assert url.path.startswith(f"/exports/{tenant.org_id}/")
    response = await client.get(f"{url.path}?{url.query}")
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    person = orjson.loads(archive.read("person.json"))
    assert person["profile"]["email"] == marks["email"]
    assert [d["id"] for d in person["documents"]] == [str(from_global_id(document_id)[1])]
    assert archive.read(person["documents"][0]["file"]).decode() == text
    assert any(e["event_type"] == "user.create" for e in person["auditEvents"])
    # at rest, the bundle is ciphertext
    export_id = from_global_id(export["id"])[1]
    stored = b"".join(
        [
            c
            async for c in services.objects.open_stream(
                f"org/{tenant.org_id}/exports/{export_id}.zip.sealed"
            )
        ]
    )
    assert marks["email"].encode() not in stored
    assert b"person.json" not in stored
    # a forged or altered link finds nothing
    for query in (
        url.query.replace("token=", "token=0"),
        url.query.replace("expires=", "expires=9"),
    ):
        assert (await client.get(f"{url.path}?{query}")).status_code == 404
    # another person does not see the export; an ADMIN does
    other = await gql(client, EXPORT_NODE, {"id": export["id"]}, token=tenant.tokens[Role.VIEWER])
    assert codes(other) == ["NOT_FOUND"]
    admin = await gql(client, EXPORT_NODE, {"id": export["id"]}, token=tenant.tokens[Role.ADMIN])
    assert admin["data"]["node"]["state"] == "SUCCEEDED"
    # and nobody else may ask for one
    refused = await gql(client, EXPORT, {"id": user_gid}, token=tenant.tokens[Role.VIEWER])
    assert codes(refused) == ["FORBIDDEN"]
    log = await gql(
        client,
        "query($id: ID!) { auditLog(first: 50, filter: {resourceId: $id}) { edges { node {"
        " eventType } } } }",
        {"id": user_gid},
        token=tenant.tokens[Role.ADMIN],
    )
    types = {e["node"]["eventType"] for e in log["data"]["auditLog"]["edges"]}
    assert {"user.export", "user.export_ready", "user.export_download"} <= types


def _owner_url(services: Services) -> str:
    url = make_url(services.db.engine.url.render_as_string(hide_password=False))
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def _occurrences(services: Services, needles: list[str]) -> list[tuple[str, str, str]]:
    """(table, column, row as text) of every row of every table whose text or JSON columns
    hold any needle: read as the owner, past row-level security."""
    conn = await asyncpg.connect(_owner_url(services))
    try:
        columns = await conn.fetch(
            """SELECT c.table_name, c.column_name FROM information_schema.columns c
               JOIN pg_class k ON k.relname = c.table_name
                AND k.relnamespace = 'public'::regnamespace
               WHERE c.table_schema = 'public' AND NOT k.relispartition
                 AND c.data_type IN ('text', 'character varying', 'character', 'json',
                                     'jsonb', 'ARRAY')"""
        )
        hits = []
        for row in columns:
            table, column = row["table_name"], row["column_name"]
            for needle in needles:
                found = await conn.fetch(
                    f'SELECT t::text AS r FROM "{table}" t WHERE "{column}"::text ILIKE $1',  # noqa: S608
                    f"%{needle}%",
                )
                hits += [(table, column, r["r"]) for r in found]
        return hits
    finally:
        await conn.close()


async def test_erasure_leaves_nothing_but_what_the_receipt_lists(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    # given: a person with documents (one under legal hold), feedback, a session, an export
    user, token, marks = await _person(services, tenant)
    marks["file"] = f"FILEMARK{uuid.uuid4().hex[:10]}"
    marks["note"] = f"NOTEMARK{uuid.uuid4().hex[:10]}"
    doomed = await _upload(client, token, f"TERMS\n\n{marks['file']} deleted.\n", "a.txt")
    held = await _upload(client, token, f"TERMS\n\n{marks['file']} held.\n", "b.txt")
    await run_jobs(services)
    admin_token = tenant.tokens[Role.ADMIN]
    assert (await gql(client, HOLD, {"id": held}, token=admin_token)).get("errors") is None
    theirs = await add_document(services, tenant, classification=Classification.INTERNAL)
    analyses = await gql(client, ANALYSES, {"id": gid("Document", theirs.id)}, token=token)
    analysis = analyses["data"]["document"]["analyses"]["edges"][0]["node"]["id"]
    feedback = await gql(
        client,
        SUBMIT,
        {"input": {"analysisId": analysis, "action": "CUSTOM", "customText": marks["note"]}},
        token=token,
    )
    assert feedback.get("errors") is None, feedback
    signed_in = await gql(client, LOGIN, {"e": marks["email"], "p": PASSWORD})
    assert signed_in["data"]["login"]["accessToken"]
    export = await _export(client, services, token, gid("User", user.id))
    assert export["state"] == "SUCCEEDED"
    objects = services.objects
    doomed_key = f"org/{tenant.org_id}/documents/{from_global_id(doomed)[1]}"
    held_key = f"org/{tenant.org_id}/documents/{from_global_id(held)[1]}"
    export_key = f"org/{tenant.org_id}/exports/{from_global_id(export['id'])[1]}.zip.sealed"
    assert await objects.exists(doomed_key)

    # when: an ADMIN (signed in) erases them
    admin_login = await gql(client, LOGIN, {"e": tenant.email(Role.ADMIN), "p": PASSWORD})
    admin = admin_login["data"]["login"]["accessToken"]
    body = await gql(client, ERASE, {"id": gid("User", user.id)}, token=admin)
    assert body.get("errors") is None, body
    receipt = body["data"]["eraseUser"]
    await run_jobs(services)  # the cleanup job: stored objects (and future hooks)

    # then: the receipt
    assert receipt["documentsDeleted"] == 1
    assert receipt["documentsKeptForLegalHold"] == 1
    assert receipt["auditEventsRetained"] >= 1
    # they cannot sign in, and their token is gone
    again = await gql(client, LOGIN, {"e": marks["email"], "p": PASSWORD})
    assert codes(again) == ["UNAUTHENTICATED"]
    assert codes(await gql(client, "{ viewer { id } }", token=token)) == ["UNAUTHENTICATED"]
    # stored objects: deleted, except the held document's
    assert not await objects.exists(doomed_key)
    assert not await objects.exists(export_key)
    assert await objects.exists(held_key)
    # the receipt is in the chain, which still verifies
    chain = await gql(
        client, "{ verifyAuditChain { valid checked } }", token=tenant.tokens[Role.AUDITOR]
    )
    assert chain["data"]["verifyAuditChain"]["valid"] is True
    event = await gql(
        client,
        "query($id: ID!) { node(id: $id) { ... on AuditEvent { eventType after description } } }",
        {"id": receipt["auditEventId"]},
        token=admin_token,
    )
    assert event["data"]["node"]["eventType"] == "user.erase"
    assert marks["email"] not in orjson.dumps(event["data"]["node"]).decode()

    # and nothing of them remains anywhere but in what the receipt lists as kept
    held_id = str(from_global_id(held)[1])
    hits = await _occurrences(services, list(marks.values()))
    unexplained = [
        (table, column, row)
        for table, column, row in hits
        if table != "audit_logs"  # kept: append-only and hash-chained, counted in the receipt
        and held_id not in row  # kept: the document under legal hold (rows naming it)
    ]
    assert unexplained == []
    audit_rows = {row for table, _, row in hits if table == "audit_logs"}
    assert 1 <= len(audit_rows) <= receipt["auditEventsRetained"]
    assert any("legal hold" in line for line in receipt["retained"])


async def _bundle(client: httpx.AsyncClient, export: dict[str, Any]) -> zipfile.ZipFile:
    assert export["state"] == "SUCCEEDED", export
    url = urlsplit(export["downloadUrl"])
    response = await client.get(f"{url.path}?{url.query}")
    assert response.status_code == 200
    return zipfile.ZipFile(io.BytesIO(response.content))


async def test_export_holds_only_what_the_requesting_admin_may_read(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    """A GDPR export is a read: an ADMIN gets what their clearance lets them read of the
    person (documents, files, feedback on them, audit events about them), and a count of
    what was withheld, so an ADMIN cleared for it can complete the export."""
    subject, subject_token = await add_user(
        services, tenant, role=Role.REVIEWER, clearance=Classification.RESTRICTED
    )
    _, low_token = await add_user(
        services, tenant, role=Role.ADMIN, clearance=Classification.INTERNAL
    )
    _, high_token = await add_user(
        services, tenant, role=Role.ADMIN, clearance=Classification.RESTRICTED
    )
    secret = f"RESTRICTED pay file SSN 078-05-1120 {uuid.uuid4()}\n"
    name = f"pay-{uuid.uuid4().hex[:8]}.txt"
    response = await upload(
        client, subject_token, name, secret.encode(), classification="RESTRICTED"
    )
    restricted_gid = response.json()["data"]["uploadDocument"]["document"]["id"]
    restricted_id = from_global_id(restricted_gid)[1]
    public = await upload(
        client, subject_token, "memo.txt", b"A memo.\n", classification="INTERNAL"
    )
    public_id = from_global_id(public.json()["data"]["uploadDocument"]["document"]["id"])[1]
    await run_jobs(services)
    quote = f"quote-{uuid.uuid4().hex}"
    async with services.db.transaction(tenant.org_id) as session:
        await create_feedback(
            session,
            Feedback(
                organization_id=tenant.org_id,
                document_id=restricted_id,
                user_id=subject.id,
                action=FeedbackAction.CUSTOM,
                custom_text="see the SSN",
                highlighted_text=quote,
            ),
        )
    read = await gql(
        client,
        "query($id: ID!) { document(id: $id) { id } }",
        {"id": restricted_gid},
        token=low_token,
    )
    assert codes(read) == ["NOT_FOUND"]  # the read rule the export must follow

    low = await _bundle(client, await _export(client, services, low_token, gid("User", subject.id)))
    person = orjson.loads(low.read("person.json"))
    assert [d["id"] for d in person["documents"]] == [str(public_id)]
    assert f"files/{restricted_id}" not in low.namelist()
    raw = low.read("person.json").decode()
    for needle in (name, quote, "078-05-1120", str(restricted_id)):
        assert needle not in raw
    assert person["feedback"] == []
    assert person["withheld"]["documents"] == 1
    assert person["withheld"]["feedback"] == 1
    assert person["withheld"]["auditEvents"] >= 1  # the upload event names the file

    high = await _bundle(
        client, await _export(client, services, high_token, gid("User", subject.id))
    )
    person = orjson.loads(high.read("person.json"))
    assert {d["id"] for d in person["documents"]} == {str(public_id), str(restricted_id)}
    assert high.read(f"files/{restricted_id}").decode() == secret
    assert [f["highlighted_text"] for f in person["feedback"]] == [quote]
    assert person["withheld"]["documents"] == 0
    assert person["withheld"]["feedback"] == 0
    assert person["withheld"]["auditEvents"] == 0


STATUS = """query($id: ID!) { erasureStatus(userId: $id) {
  cleanupComplete cleanupJobs { state } } }"""
UNHOLD = """mutation($id: ID!) { updateDocument(input: {id: $id, legalHold: false}) {
  legalHold } }"""
READ = """query($id: ID!) { document(id: $id) { id } }"""


async def test_a_document_kept_for_a_legal_hold_is_erased_when_the_hold_lifts(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    """Erasure keeps a held document only while the hold lasts: the erasure is not complete
    until then, and lifting the hold finishes it (row, file, index) under the person's
    erasure; a hold lifted on a document of a person not erased changes nothing else."""
    user, token, _ = await _person(services, tenant)
    held = await _upload(client, token, f"TERMS\n\nheld {uuid.uuid4()}\n", "held.txt")
    await run_jobs(services)
    admin = tenant.tokens[Role.ADMIN]
    assert (await gql(client, HOLD, {"id": held}, token=admin)).get("errors") is None
    theirs = await add_document(services, tenant, classification=Classification.INTERNAL)
    theirs_gid = gid("Document", theirs.id)
    assert (await gql(client, HOLD, {"id": theirs_gid}, token=admin)).get("errors") is None
    admin_login = await gql(client, LOGIN, {"e": tenant.email(Role.ADMIN), "p": PASSWORD})
    signed_in = admin_login["data"]["login"]["accessToken"]  # erasure asks for a session
    body = await gql(client, ERASE, {"id": gid("User", user.id)}, token=signed_in)
    assert body["data"]["eraseUser"]["documentsKeptForLegalHold"] == 1, body
    await run_jobs(services)

    status = await gql(client, STATUS, {"id": gid("User", user.id)}, token=admin)
    assert status["data"]["erasureStatus"]["cleanupComplete"] is False
    held_key = f"org/{tenant.org_id}/documents/{from_global_id(held)[1]}"
    assert await services.objects.exists(held_key)

    lifted = await gql(client, UNHOLD, {"id": held}, token=admin)
    assert lifted.get("errors") is None, lifted
    await run_jobs(services)
    assert codes(await gql(client, READ, {"id": held}, token=admin)) == ["NOT_FOUND"]
    assert not await services.objects.exists(held_key)
    status = await gql(client, STATUS, {"id": gid("User", user.id)}, token=admin)
    jobs = status["data"]["erasureStatus"]["cleanupJobs"]
    assert status["data"]["erasureStatus"]["cleanupComplete"] is True
    assert len(jobs) >= 2  # the erasure's cleanup, then the held document's
    assert {j["state"] for j in jobs} == {"SUCCEEDED"}

    # someone not erased: lifting their hold only lifts it
    assert (await gql(client, UNHOLD, {"id": theirs_gid}, token=admin)).get("errors") is None
    await run_jobs(services)
    found = await gql(client, READ, {"id": theirs_gid}, token=admin)
    assert found["data"]["document"]["id"] == theirs_gid
