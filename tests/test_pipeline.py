"""Uploads through extraction and analysis, over HTTP and real workers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from asgi_lifespan import LifespanManager

from prism.config import Settings
from prism.models.documents import Document
from prism.models.enums import Role
from prism.models.jobs import Job
from prism.services import Services
from prism.web.app import create_app
from tests import corpus
from tests.factories import Tenant, codes, gql
from tests.pipeline_helpers import CSRF, DOCUMENT, run_jobs, upload

CONTRACT_TXT = b"""MASTER AGREEMENT

1. Term
This agreement shall automatically renew for one-year terms.

2. Liability
The supplier accepts unlimited liability. Contact jane.doe@example.com or 415-555-0100.
"""


async def _upload_ok(
    client: httpx.AsyncClient, token: str, name: str, data: bytes, **fields: Any
) -> dict[str, Any]:
    response = await upload(client, token, name, data, **fields)
    body = response.json()
    assert body.get("errors") is None, body
    return dict(body["data"]["uploadDocument"])


@pytest.mark.parametrize(
    ("name", "data", "mime", "sections"),
    [
        ("contract.txt", CONTRACT_TXT, "text/plain", ["1. Term", "2. Liability"]),
        (
            "contract.docx",
            corpus.docx_bytes(),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            ["1. Term", "2. Liability", "3. Termination"],
        ),
        ("contract.pdf", corpus.pdf_bytes(), "application/pdf", ["Part 1", "Part 2", "Part 3"]),
    ],
)
async def test_upload_reaches_completed_with_feedback(
    client: httpx.AsyncClient,
    services: Services,
    tenant: Tenant,
    name: str,
    data: bytes,
    mime: str,
    sections: list[str],
) -> None:
    # given an upload by a reviewer; the client's name and type are only metadata
    token = tenant.tokens[Role.REVIEWER]
    uploaded = await _upload_ok(client, token, f"../../etc/{name}", data, documentType="CONTRACT")
    assert uploaded["deduplicated"] is False
    document = uploaded["document"]
    assert document["filename"] == name
    assert document["mimeType"] == mime
    assert document["processingStatus"] == "UPLOADED"
    assert uploaded["job"]["state"] == "QUEUED"
    # when the workers run
    await run_jobs(services)
    # then the document is COMPLETED with sections, analyses and aggregates
    body = await gql(client, DOCUMENT, {"id": document["id"]}, token=token)
    result = body["data"]["document"]
    assert result["processingStatus"] == "COMPLETED", result
    assert [e["node"]["name"] for e in result["sections"]["edges"]] == sections
    assert result["totalSections"] == len(sections)
    assert result["totalFeedbackItems"] > 0
    assert result["riskLevel"] == "HIGH"
    assert all(len(e["node"]["analyses"]) == 1 for e in result["sections"]["edges"])
    job = await gql(
        client,
        "query($id: ID!) { job(id: $id) { state attempts } }",
        {"id": uploaded["job"]["id"]},
        token=token,
    )
    assert job["data"]["job"] == {"state": "SUCCEEDED", "attempts": 1}


async def test_dedup_within_and_across_organizations(
    client: httpx.AsyncClient,
    services: Services,
    tenant: Tenant,
    other_tenant: Tenant,
    settings: Settings,
) -> None:
    data = CONTRACT_TXT + b"\nunique " + tenant.name.encode()
    first = await _upload_ok(client, tenant.tokens[Role.REVIEWER], "a.txt", data)
    again = await _upload_ok(client, tenant.tokens[Role.ADMIN], "b.txt", data)
    assert again["deduplicated"] is True
    assert again["job"] is None
    assert again["document"]["id"] == first["document"]["id"]
    theirs = await _upload_ok(client, other_tenant.tokens[Role.REVIEWER], "a.txt", data)
    assert theirs["deduplicated"] is False
    assert theirs["document"]["id"] != first["document"]["id"]
    # one object per organization, each under its own organization's prefix
    objects = settings.data_dir / "objects" / "org"
    assert len(list((objects / str(tenant.org_id)).rglob("*"))) == 2  # documents/ + one file
    assert len(list((objects / str(other_tenant.org_id)).rglob("*"))) == 2


async def _counts(services: Services, tenant: Tenant) -> tuple[int, int]:
    async with services.db.transaction(tenant.org_id) as session:
        documents = await session.scalar(sa.select(sa.func.count()).select_from(Document))
        jobs = await session.scalar(sa.select(sa.func.count()).select_from(Job))
    return int(documents or 0), int(jobs or 0)


def _objects(settings: Settings, tenant: Tenant) -> int:
    root = settings.data_dir / "objects" / "org" / str(tenant.org_id)
    return len([p for p in root.rglob("*") if p.is_file()]) if root.exists() else 0


@pytest.mark.parametrize(
    ("name", "data", "headers", "status", "code"),
    [
        ("empty.txt", b"", None, 200, "BAD_USER_INPUT"),
        ("binary.txt", bytes(range(256)) * 4, None, 200, "UNSUPPORTED_MEDIA_TYPE"),
        ("photo.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, None, 200, "UNSUPPORTED_MEDIA_TYPE"),
        ("archive.docx", corpus.plain_zip_bytes(), None, 200, "UNSUPPORTED_MEDIA_TYPE"),
        ("parts.docx", corpus.many_parts_zip_bytes(), None, 200, "UNSUPPORTED_MEDIA_TYPE"),
        ("forged.txt", CONTRACT_TXT, {}, 400, "BAD_USER_INPUT"),
    ],
)
async def test_bad_uploads_are_refused_and_store_nothing(
    client: httpx.AsyncClient,
    services: Services,
    tenant: Tenant,
    settings: Settings,
    name: str,
    data: bytes,
    headers: dict[str, str] | None,
    status: int,
    code: str,
) -> None:
    before = (await _counts(services, tenant), _objects(settings, tenant))
    response = await upload(client, tenant.tokens[Role.REVIEWER], name, data, headers=headers)
    assert response.status_code == status
    assert codes(response.json()) == [code], response.json()
    assert (await _counts(services, tenant), _objects(settings, tenant)) == before


async def test_form_posts_are_refused(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.post(
        "/graphql",
        content=b"query={viewer{scopes}}",
        headers={
            "content-type": "application/x-www-form-urlencoded",
            "authorization": f"Bearer {tenant.tokens[Role.ADMIN]}",
        },
    )
    assert response.status_code == 415
    assert codes(response.json()) == ["UNSUPPORTED_MEDIA_TYPE"]


async def test_viewers_may_not_upload(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await upload(client, tenant.tokens[Role.VIEWER], "a.txt", CONTRACT_TXT)
    assert codes(response.json()) == ["FORBIDDEN"]


async def test_classification_above_clearance_is_refused(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await upload(
        client, tenant.tokens[Role.REVIEWER], "a.txt", CONTRACT_TXT, classification="RESTRICTED"
    )
    assert codes(response.json()) == ["BAD_USER_INPUT"]


@pytest.fixture
async def small_limit_client(
    settings: Settings, database_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    small = settings.model_copy(update={"max_upload_bytes": 4096})
    app = create_app(small, database_url=database_url)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://prism.test") as http:
            yield http


async def test_oversized_uploads_are_refused(
    small_limit_client: httpx.AsyncClient, services: Services, tenant: Tenant, settings: Settings
) -> None:
    before = (await _counts(services, tenant), _objects(settings, tenant))
    response = await upload(
        small_limit_client, tenant.tokens[Role.REVIEWER], "big.txt", b"word " * 400_000
    )
    assert response.status_code == 413
    assert codes(response.json()) == ["PAYLOAD_TOO_LARGE"]
    # just under the HTTP limit but over the file limit: refused by the resolver
    response = await upload(
        small_limit_client, tenant.tokens[Role.REVIEWER], "big.txt", b"word " * 1000
    )
    assert codes(response.json()) == ["PAYLOAD_TOO_LARGE"]
    assert (await _counts(services, tenant), _objects(settings, tenant)) == before


@pytest.mark.parametrize(
    ("name", "data", "error"),
    [
        ("bomb.docx", corpus.zip_bomb_docx_bytes(), "zip bomb"),
        ("laughs.docx", corpus.entity_docx_bytes(), "DTD or entities"),
        ("locked.pdf", corpus.encrypted_pdf_bytes(), "password-protected"),
        ("bomb.pdf", corpus.pdf_stream_bomb_bytes(), "PDF"),
        ("broken.pdf", b"%PDF-1.7\n" + b"garbage " * 100, "PDF"),
    ],
)
async def test_hostile_files_end_failed_with_a_clear_error(
    client: httpx.AsyncClient,
    services: Services,
    tenant: Tenant,
    name: str,
    data: bytes,
    error: str,
) -> None:
    token = tenant.tokens[Role.REVIEWER]
    uploaded = await _upload_ok(client, token, name, data)
    await run_jobs(services)
    body = await gql(client, DOCUMENT, {"id": uploaded["document"]["id"]}, token=token)
    result = body["data"]["document"]
    assert result["processingStatus"] == "FAILED"
    assert error in result["processingError"]
    assert result["sections"]["edges"] == []
    job = await gql(
        client,
        "query($id: ID!) { job(id: $id) { state lastError } }",
        {"id": uploaded["job"]["id"]},
        token=token,
    )
    assert job["data"]["job"]["state"] == "DEAD"


async def test_reanalysis_keeps_history_and_feedback(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    token = tenant.tokens[Role.REVIEWER]
    uploaded = await _upload_ok(
        client, token, "c.txt", CONTRACT_TXT + b"\nre " + tenant.name.encode()
    )
    await run_jobs(services)
    doc_id = uploaded["document"]["id"]
    analyze = """mutation($id: ID!) { analyzeDocument(input: {documentId: $id}) {
        document { processingStatus } job { kind state } } }"""
    body = await gql(client, analyze, {"id": doc_id}, token=token)
    assert body["data"]["analyzeDocument"]["document"]["processingStatus"] == "QUEUED"
    assert codes(await gql(client, analyze, {"id": doc_id}, token=token)) == ["CONFLICT"]
    assert body["data"]["analyzeDocument"]["job"]["kind"] == "document.analyze"
    await run_jobs(services)
    result = (await gql(client, DOCUMENT, {"id": doc_id}, token=token))["data"]["document"]
    assert result["processingStatus"] == "COMPLETED"
    assert all(len(e["node"]["analyses"]) == 2 for e in result["sections"]["edges"])
    unknown = await gql(
        client,
        """mutation($id: ID!) {
        analyzeDocument(input: {documentId: $id, analyzer: "gpt-9"}) { job { id } } }""",
        {"id": doc_id},
        token=token,
    )
    assert codes(unknown) == ["BAD_USER_INPUT"]


def test_pii_scan_is_linear_on_hostile_text() -> None:
    from prism.extraction.pii import scan

    started = time.perf_counter()
    scan("a." * 500_000 + "a@" * 200_000 + "1-" * 200_000)
    assert time.perf_counter() - started < 2  # quadratic patterns took minutes here


async def test_large_json_bodies_are_refused_before_parsing(client: httpx.AsyncClient) -> None:
    big = b'{"query": "{ viewer { scopes } }", "variables": {"x": "' + b"a" * 2_000_000 + b'"}}'
    response = await client.post(
        "/graphql", content=big, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert codes(response.json()) == ["PAYLOAD_TOO_LARGE"]


async def test_an_upload_in_a_failed_request_leaves_no_object(
    client: httpx.AsyncClient, services: Services, tenant: Tenant, settings: Settings
) -> None:
    before = _objects(settings, tenant)
    operations = {
        "query": """mutation($input: UploadDocumentInput!) {
            a: uploadDocument(input: $input) { document { id } }
            b: deleteDocument(id: "RG9jdW1lbnQ6MDAwMDAwMDAtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAw") {
              deletedId } }""",
        "variables": {"input": {"file": None}},
    }
    response = await client.post(
        "/graphql",
        data={
            "operations": orjson.dumps(operations).decode(),
            "map": orjson.dumps({"0": ["variables.input.file"]}).decode(),
        },
        files={"0": ("x.txt", CONTRACT_TXT + b"\norphan " + tenant.name.encode(), "text/plain")},
        headers={"authorization": f"Bearer {tenant.tokens[Role.ADMIN]}", **CSRF},
    )
    assert codes(response.json()) == ["NOT_FOUND"]
    assert _objects(settings, tenant) == before
    assert (await _counts(services, tenant))[0] == 0


async def test_uploading_a_failed_document_again_retries_it(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    token = tenant.tokens[Role.REVIEWER]
    locked = corpus.encrypted_pdf_bytes()
    first = await _upload_ok(client, token, "locked.pdf", locked)
    await run_jobs(services)
    again = await _upload_ok(client, token, "locked.pdf", locked)
    assert again["deduplicated"] is True
    assert again["document"]["id"] == first["document"]["id"]
    assert again["document"]["processingStatus"] == "UPLOADED"
    assert again["job"]["state"] == "QUEUED"
    await run_jobs(services)
    body = await gql(client, DOCUMENT, {"id": first["document"]["id"]}, token=token)
    assert body["data"]["document"]["processingStatus"] == "FAILED"  # still locked, still said
