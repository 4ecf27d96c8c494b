"""Object storage against a real S3-compatible server (moto in server mode) and the local
directory, through the same protocol; and uploads landing in S3 end to end."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import aioboto3
import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr

from prism import bootstrap
from prism.config import Settings
from prism.db import migrations
from prism.jobs.worker import Worker
from prism.models.enums import Role
from prism.services import Services
from prism.storage import LocalStore, ObjectStore, S3Store, document_key
from prism.web.app import create_app
from tests.conftest import NewDatabase
from tests.factories import Tenant, gql, make_tenant
from tests.pipeline_helpers import upload

BUCKET = "prism-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server on loopback, with credentials it accepts."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "prism-test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "prism-test-secret")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=out,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"moto server did not start: {log.read_text()}") from None
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="session")
async def bucket(s3_endpoint: str) -> str:
    async with aioboto3.Session().client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1"
    ) as s3:
        await s3.create_bucket(Bucket=BUCKET)
    return BUCKET


@pytest.fixture(params=["local", "s3"])
def objects(request: pytest.FixtureRequest, tmp_path: object) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "objects")  # type: ignore[operator]
    endpoint = request.getfixturevalue("s3_endpoint")
    request.getfixturevalue("bucket")
    return S3Store(
        bucket=BUCKET, prefix="t/", endpoint_url=endpoint, sse="AES256", storage_class="STANDARD_IA"
    )


async def _read(objects: ObjectStore, key: str) -> bytes:
    return b"".join([chunk async for chunk in objects.open_stream(key)])


async def test_put_read_delete(objects: ObjectStore) -> None:
    key = document_key(uuid.uuid4(), uuid.uuid4())
    data = os.urandom(3 * 1024 * 1024 + 17)  # more than one chunk
    await objects.put_file(key, io.BytesIO(data), size=len(data), content_type="application/pdf")
    assert await objects.exists(key)
    assert await _read(objects, key) == data
    await objects.delete(key)
    assert not await objects.exists(key)


async def test_local_keys_cannot_escape(tmp_path: object) -> None:
    local = LocalStore(tmp_path / "objects")  # type: ignore[operator]
    with pytest.raises(ValueError, match="escapes"):
        await local.put_file("../outside", io.BytesIO(b"x"), size=1, content_type="text/plain")


async def test_s3_objects_carry_encryption_and_class(s3_endpoint: str, bucket: str) -> None:
    objects = S3Store(
        bucket=bucket,
        prefix="p/",
        endpoint_url=s3_endpoint,
        sse="AES256",
        storage_class="STANDARD_IA",
    )
    key = document_key(uuid.uuid4(), uuid.uuid4())
    await objects.put_file(key, io.BytesIO(b"hello"), size=5, content_type="text/plain")
    async with aioboto3.Session().client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1"
    ) as s3:
        head = await s3.head_object(Bucket=bucket, Key=f"p/{key}")
    assert head["ServerSideEncryption"] == "AES256"
    assert head["StorageClass"] == "STANDARD_IA"
    assert head["ContentType"] == "text/plain"


@pytest.fixture
async def s3_world(
    settings: Settings, new_database: NewDatabase, s3_endpoint: str, bucket: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Services, Tenant]]:
    """A deployment that stores files in S3, on a database of its own (its queue holds only
    its own jobs)."""
    url = await new_database()
    await asyncio.to_thread(migrations.upgrade, url)
    on_s3 = settings.model_copy(
        update={
            "s3_bucket": bucket,
            "s3_endpoint_url": s3_endpoint,
            "s3_prefix": "e2e/",
            "database_url": SecretStr(url),
        }
    )
    services = bootstrap.build_services(on_s3, url)
    app = create_app(on_s3, database_url=url)
    try:
        async with LifespanManager(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://prism.test") as http:
                yield http, services, await make_tenant(services)
    finally:
        await services.close()


async def test_uploads_land_in_s3_and_workers_read_them_back(
    s3_world: tuple[httpx.AsyncClient, Services, Tenant], s3_endpoint: str, bucket: str
) -> None:
    client, services, tenant = s3_world
    data = b"1. Term\nThis agreement shall automatically renew. " + uuid.uuid4().hex.encode()
    response = await upload(client, tenant.tokens[Role.REVIEWER], "s3.txt", data)
    body = response.json()
    assert body.get("errors") is None, body
    async with aioboto3.Session().client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1"
    ) as s3:
        listed = await s3.list_objects_v2(Bucket=bucket, Prefix=f"e2e/org/{tenant.org_id}/")
    assert len(listed.get("Contents", [])) == 1
    await Worker(services).drain()
    result = await gql(
        client,
        "query($id: ID!) { document(id: $id) { processingStatus } }",
        {"id": body["data"]["uploadDocument"]["document"]["id"]},
        token=tenant.tokens[Role.REVIEWER],
    )
    assert result["data"]["document"]["processingStatus"] == "COMPLETED"
