"""Opening a document's original and its page previews over HTTP: for readers who may read
the document, byte for byte (sealed originals opened on the fly), audited, never cached; the
same NOT_FOUND as ``document(id:)`` for everyone else, and that attempt audited too."""

from __future__ import annotations

import io
import uuid
from typing import Any

import httpx
import pytest
from PIL import Image

from prism.config import Settings
from prism.crypto.sealed import is_sealed
from prism.execution.ids import to_global_id
from prism.models.enums import Classification, Role
from prism.services import Services
from prism.web.originals import ORIGINAL_COST, content_disposition
from tests import corpus
from tests.conftest import app_with, client_of
from tests.factories import Tenant, add_user, codes, gql, make_tenant
from tests.pipeline_helpers import run_jobs, upload
from tests.scans import encoded

LOG = """query($id: ID) { auditLog(first: 100, filter: {resourceId: $id}) { edges { node {
  eventType category after actor { email } } } } }"""
DOCUMENT = "query($id: ID!) { document(id: $id) { id filename } }"
DELETE = "mutation($id: ID!) { deleteDocument(id: $id) { deletedId } }"


async def _uploaded(
    client: httpx.AsyncClient,
    services: Services,
    token: str,
    name: str,
    data: bytes,
    **fields: Any,
) -> str:
    response = await upload(client, token, name, data, **fields)
    body = response.json()
    assert body.get("errors") is None, body
    await run_jobs(services)
    return str(body["data"]["uploadDocument"]["document"]["id"])


def _get(client: httpx.AsyncClient, path: str, token: str | None) -> Any:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return client.get(path, headers=headers)


async def _events(client: httpx.AsyncClient, token: str, document_id: str) -> list[str]:
    log = await gql(client, LOG, {"id": document_id}, token=token)
    return [e["node"]["eventType"] for e in log["data"]["auditLog"]["edges"]]


async def test_a_restricted_original_opens_only_for_cleared_readers_of_its_department(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    # given a RESTRICTED PDF uploaded by the legal department (stored sealed)
    data = corpus.pdf_bytes() + f"\n% {uuid.uuid4()}\n".encode()
    admin = tenant.tokens[Role.ADMIN]
    document_id = await _uploaded(
        client, services, admin, "Vertrag «Müller» final.pdf", data, classification="RESTRICTED"
    )
    _, cleared = await add_user(
        services, tenant, role=Role.REVIEWER, clearance=Classification.RESTRICTED
    )
    _, elsewhere = await add_user(
        services,
        tenant,
        role=Role.REVIEWER,
        clearance=Classification.RESTRICTED,
        department="finance",
    )
    stranger = (await make_tenant(services)).tokens[Role.ADMIN]
    path = f"/documents/{document_id}/original"

    # when a cleared reader of the same department downloads it
    response = await _get(client, path, cleared)
    # then it is the uploaded file, byte for byte, with safe headers
    assert response.status_code == 200, response.text
    assert response.content == data
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-length"] == str(len(data))
    assert response.headers["cache-control"] == "private, no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in response.headers["content-security-policy"]
    assert response.headers["content-disposition"] == (
        'attachment; filename="Vertrag Muller final.pdf"; '
        "filename*=UTF-8''Vertrag%20%C2%ABM%C3%BCller%C2%BB%20final.pdf"
    )
    assert response.headers["ratelimit-remaining"]
    # although it is stored sealed
    async with services.db.transaction(tenant.org_id) as session:
        from prism.execution.ids import expect_id
        from prism.models.documents import read_document_any_state

        row = await read_document_any_state(
            session, tenant.org_id, expect_id(document_id, "Document")
        )
        assert row is not None
        assert row.storage_key is not None
        key = row.storage_key
    stored = b"".join([chunk async for chunk in services.objects.open_stream(key)])
    assert is_sealed(stored[:16])
    assert data[:200] not in stored

    # and everyone else gets what document(id:) answers them: NOT_FOUND
    for token in (elsewhere, stranger, tenant.tokens[Role.VIEWER]):
        body = await gql(client, DOCUMENT, {"id": document_id}, token=token)
        assert codes(body) == ["NOT_FOUND"]
        refused = await _get(client, path, token)
        assert refused.status_code == 404
        assert refused.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
        assert refused.headers["cache-control"] == "private, no-store"
    # and without a bearer token, nobody
    anonymous = await _get(client, path, None)
    assert anonymous.status_code == 401
    assert anonymous.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"

    # the read and the refused attempts of the organization are audited (the stranger's
    # attempt is in the stranger's own organization's log)
    events = await _events(client, admin, document_id)
    assert events.count("document.original_read") == 1
    assert events.count("document.original_refused") == 2


async def test_page_previews_are_bounded_pngs(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    token = tenant.tokens[Role.REVIEWER]
    data = corpus.pdf_bytes() + f"\n% {uuid.uuid4()}\n".encode()
    document_id = await _uploaded(client, services, token, "contract.pdf", data)
    # when a page is previewed
    response = await _get(client, f"/documents/{document_id}/pages/2/preview", token)
    # then it is a PNG of the preview width, not cached, and the read is audited
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"] == "private, no-store"
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "PNG"
    assert image.width == services.settings.preview_width
    assert image.height <= 4 * image.width
    # pages it does not have, and documents without pages, have no preview
    beyond = await _get(client, f"/documents/{document_id}/pages/99/preview", token)
    assert beyond.status_code == 404
    text_id = await _uploaded(
        client, services, token, "note.txt", f"A note {uuid.uuid4()}".encode()
    )
    none = await _get(client, f"/documents/{text_id}/pages/1/preview", token)
    assert none.status_code == 404
    events = await _events(client, tenant.tokens[Role.ADMIN], document_id)
    assert events.count("document.preview_read") == 1
    assert events.count("document.original_refused") == 1


async def test_readers_below_confidential_get_no_originals(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    # given an INTERNAL document in which detection found no personal data (an original can
    # still hold what detection cannot read: text in pictures, signatures)
    uploader = tenant.tokens[Role.REVIEWER]
    without = await _uploaded(
        client, services, uploader, "b.txt", f"Nothing personal {uuid.uuid4()}".encode()
    )
    viewer = tenant.tokens[Role.VIEWER]  # INTERNAL clearance: sees PII masked
    # then the viewer opens neither the original nor a picture of it
    refused = await _get(client, f"/documents/{without}/original", viewer)
    assert refused.status_code == 403
    assert refused.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    # while a reviewer (CONFIDENTIAL) opens it, as it is (no charset is claimed for a text
    # file whose encoding is its own)
    opened = await _get(client, f"/documents/{without}/original", uploader)
    assert opened.status_code == 200
    assert opened.headers["content-type"] == "text/plain"


async def test_deleted_documents_and_bad_ids_have_no_original(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    token = tenant.tokens[Role.REVIEWER]
    document_id = await _uploaded(
        client, services, token, "gone.txt", f"Soon gone {uuid.uuid4()}".encode()
    )
    body = await gql(client, DELETE, {"id": document_id}, token=token)
    assert body.get("errors") is None, body
    gone = await _get(client, f"/documents/{document_id}/original", token)
    assert gone.status_code == 404
    malformed = await _get(client, "/documents/not-an-id/original", token)
    assert malformed.status_code == 400
    assert malformed.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    user_id = tenant.user_gid(Role.REVIEWER)  # an ID of another type
    assert (await _get(client, f"/documents/{user_id}/original", token)).status_code == 404


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"),
        (
            'evil"\r\nSet-Cookie: a=b;.pdf',
            'attachment; filename="evil_Set-Cookie_ a_b_.pdf"; '
            "filename*=UTF-8''evil%22Set-Cookie%3A%20a%3Db%3B.pdf",
        ),
        (
            "契約.pdf",
            "attachment; filename=\"document.pdf\"; filename*=UTF-8''%E5%A5%91%E7%B4%84.pdf",
        ),
        ("", "attachment; filename=\"document\"; filename*=UTF-8''document"),
    ],
)
def test_content_disposition_cannot_be_broken_out_of(name: str, expected: str) -> None:
    header = content_disposition(name)
    assert header == expected
    assert "\r" not in header
    assert "\n" not in header
    assert header.encode("ascii")  # a header value any client reads


async def test_downloads_take_from_the_callers_rate_limit(
    services: Services, settings: Settings, database_url: str, tenant: Tenant
) -> None:
    # given an allowance of one and a half downloads
    limited = settings.model_copy(
        update={"rate_limit_capacity": ORIGINAL_COST * 3 // 2, "rate_limit_refill_per_second": 1}
    )
    async with app_with(limited, database_url) as app, client_of(app) as client:
        token = tenant.tokens[Role.REVIEWER]
        document_id = await _uploaded(
            client, services, token, "small.txt", f"Small {uuid.uuid4()}".encode()
        )
        path = f"/documents/{document_id}/original"
        # when the same caller downloads twice, then the second is refused, saying when to retry
        first = await _get(client, path, token)
        assert first.status_code == 200
        second = await _get(client, path, token)
        assert second.status_code == 429
        assert second.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        assert int(second.headers["retry-after"]) > 0


async def test_head_answers_the_headers_and_an_image_previews_in_colour(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    token = tenant.tokens[Role.REVIEWER]
    photo = Image.new("RGB", (1600, 900), (200, 40, 40))
    data = encoded(photo, "PNG")
    response = await upload(client, token, f"photo-{uuid.uuid4().hex[:6]}.png", data)
    body = response.json()
    assert body.get("errors") is None, body
    document_id = body["data"]["uploadDocument"]["document"]["id"]
    # HEAD: the headers a GET would have, no body
    head = await client.head(
        f"/documents/{document_id}/original", headers={"authorization": f"Bearer {token}"}
    )
    assert head.status_code == 200
    assert head.headers["content-type"] == "image/png"
    assert head.headers["content-length"] == str(len(data))
    assert head.content == b""
    # the preview is the picture scaled to the preview width, in colour
    preview = await _get(client, f"/documents/{document_id}/pages/1/preview", token)
    assert preview.status_code == 200, preview.text
    image = Image.open(io.BytesIO(preview.content))
    assert image.size == (services.settings.preview_width, 563)
    assert image.convert("RGB").getpixel((10, 10)) == (200, 40, 40)
    # and an image has no second page
    missing = await _get(client, f"/documents/{document_id}/pages/2/preview", token)
    assert missing.status_code == 404


async def test_a_page_number_of_any_length_is_a_coded_answer(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    token = tenant.tokens[Role.REVIEWER]
    some = to_global_id("Document", uuid.uuid4())
    for page in ("9" * 5000, "1234567", "x1"):
        answer = await _get(client, f"/documents/{some}/pages/{page}/preview", token)
        assert answer.status_code == 404, page
        assert answer.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
