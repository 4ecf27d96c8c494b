"""Stored originals of CONFIDENTIAL and RESTRICTED documents are sealed in the object store
(the local directory and a real S3-compatible server, moto): their stored bytes hold none of
the plaintext, extraction still reads them, reclassification seals, `prism originals seal`
seals what was stored in the clear and changes nothing when run again, and any tampering
(a flipped byte, a cut, dropped, moved or added segment, a copy under another key) is
detected."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aioboto3
import httpx
import pytest
import sqlalchemy as sa
from asgi_lifespan import LifespanManager
from pydantic import SecretStr

from prism import bootstrap
from prism.config import Settings
from prism.crypto.sealed import (
    HEADER,
    MAGIC,
    SEGMENT,
    TAG,
    SealedObjectError,
    Sealer,
    SealingReader,
    open_sealed,
    sealed_size,
)
from prism.db import migrations
from prism.documents import originals
from prism.execution.ids import from_global_id
from prism.governance import lifecycle
from prism.models.base import utcnow
from prism.models.documents import Document
from prism.models.enums import Classification, Role, StorageTier
from prism.services import Services
from prism.storage import LocalStore, ObjectStore, S3Store
from prism.web.app import create_app
from tests.conftest import NewDatabase
from tests.factories import Tenant, gid, gql, make_tenant
from tests.pipeline_helpers import run_jobs, upload
from tests.test_storage import BUCKET, bucket, s3_endpoint  # noqa: F401 - moto fixtures

# An employee record: what must never be readable in the object store.
SSN = "078-05-1120"
CARD = "4111 1111 1111 1111"
SECRETS = (SSN.encode(), CARD.encode(), b"Employee record", b"Harriet")
STATUS = """query($id: ID!) { document(id: $id) { processingStatus processingError
  sections(first: 20) { edges { node { content } } } } }"""
RECLASSIFY = """mutation($id: ID!, $c: Classification!) {
  updateDocument(input: {id: $id, classification: $c}) { classification } }"""


def _record() -> bytes:
    lines = [
        "Employee record",
        "",
        "1. Identity",
        f"Name: Harriet Vance. SSN {SSN}. Corporate card {CARD}.",
        "",
        "2. Terms",
        "The employee accepts unlimited liability for the corporate card.",
    ]
    # unique bytes (uploads deduplicate by content), and long enough for several segments
    padding = "\n".join(f"Clause {i}: the record continues." for i in range(6000))
    return ("\n".join(lines) + "\n" + padding + f"\n{uuid.uuid4()}\n").encode()


@dataclass
class World:
    client: httpx.AsyncClient
    services: Services
    tenant: Tenant
    kind: str
    env: dict[str, str]
    root: Path | None = None  # the local store's directory
    endpoint: str | None = None
    prefix: str = ""

    async def raw(self, key: str) -> bytes:
        """The stored bytes, read past Prism (the directory, or S3's own API)."""
        if self.root is not None:
            return await asyncio.to_thread((self.root / key).read_bytes)
        async with aioboto3.Session().client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1"
        ) as s3:
            answer = await s3.get_object(Bucket=BUCKET, Key=self.prefix + key)
            async with answer["Body"] as body:
                return bytes(await body.read())

    async def overwrite(self, key: str, data: bytes) -> None:
        """Someone with access to the store changes an object."""
        if self.root is not None:
            await asyncio.to_thread((self.root / key).write_bytes, data)
            return
        async with aioboto3.Session().client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1"
        ) as s3:
            await s3.put_object(Bucket=BUCKET, Key=self.prefix + key, Body=data)


@pytest.fixture(params=["local", "s3"])
def target(request: pytest.FixtureRequest) -> str | None:
    """Where files go: None for the local directory, else the S3 (moto) endpoint."""
    if request.param == "local":
        return None
    request.getfixturevalue("bucket")
    endpoint: str = request.getfixturevalue("s3_endpoint")
    return endpoint


@pytest.fixture
async def world(
    target: str | None, settings: Settings, new_database: NewDatabase, tmp_path: Path
) -> AsyncIterator[World]:
    """A deployment on a database of its own, storing files in a directory or in S3."""
    url = await new_database()
    await asyncio.to_thread(migrations.upgrade, url)
    update: dict[str, Any] = {"database_url": SecretStr(url), "data_dir": tmp_path}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
    env.update(PRISM_DATABASE_URL=url, PRISM_DATA_DIR=str(tmp_path), PRISM_LOG_LEVEL="WARNING")
    endpoint, prefix = target, ""
    if endpoint is not None:
        prefix = f"sealed-{uuid.uuid4().hex[:8]}/"
        update |= {"s3_bucket": BUCKET, "s3_endpoint_url": endpoint, "s3_prefix": prefix}
        env.update(PRISM_S3_BUCKET=BUCKET, PRISM_S3_ENDPOINT_URL=endpoint, PRISM_S3_PREFIX=prefix)
    own = settings.model_copy(update=update)
    services = bootstrap.build_services(own, url)
    app = create_app(own, database_url=url)
    try:
        async with LifespanManager(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://prism.test") as http:
                yield World(
                    client=http,
                    services=services,
                    tenant=await make_tenant(services),
                    kind="s3" if endpoint else "local",
                    env=env,
                    root=None if endpoint else tmp_path / "objects",
                    endpoint=endpoint,
                    prefix=prefix,
                )
    finally:
        await services.close()


async def _upload(world: World, data: bytes, classification: str) -> uuid.UUID:
    response = await upload(
        world.client,
        world.tenant.tokens[Role.ADMIN],
        "record.txt",
        data,
        classification=classification,
    )
    body = response.json()
    assert body.get("errors") is None, body
    return from_global_id(body["data"]["uploadDocument"]["document"]["id"])[1]


async def _key(world: World, document_id: uuid.UUID) -> str:
    async with world.services.db.transaction(world.tenant.org_id) as session:
        key = await session.scalar(
            sa.text("SELECT storage_key FROM documents WHERE id = :d"), {"d": document_id}
        )
    assert isinstance(key, str)
    return key


async def _opened(world: World, key: str) -> bytes:
    services = world.services
    chunks = originals.open_original(
        services.db, services.objects, services.envelope, world.tenant.org_id, key
    )
    return b"".join([chunk async for chunk in chunks])


async def _document(world: World, document_id: uuid.UUID) -> dict[str, Any]:
    body = await gql(
        world.client, STATUS, {"id": _gid(document_id)}, token=world.tenant.tokens[Role.ADMIN]
    )
    assert body.get("errors") is None, body
    document: dict[str, Any] = body["data"]["document"]
    return document


def _gid(document_id: uuid.UUID) -> str:
    return gid("Document", document_id)


def _clear(stored: bytes) -> bool:
    return any(secret in stored for secret in SECRETS)


async def test_confidential_and_restricted_uploads_are_sealed_at_rest_and_still_extracted(
    world: World,
) -> None:
    for classification in ("CONFIDENTIAL", "RESTRICTED"):
        # when: an employee record is uploaded at a level Prism encrypts
        data = _record()
        document_id = await _upload(world, data, classification)
        key = await _key(world, document_id)

        # then: the object store holds ciphertext (sealed header, sealed size), no plaintext
        stored = await world.raw(key)
        assert stored.startswith(MAGIC)
        assert len(stored) == sealed_size(len(data))
        assert len(data) > 3 * SEGMENT  # several segments: the streaming path
        assert not _clear(stored), classification

        # and: extraction opens it on the fly; the sections hold the text
        await run_jobs(world.services)
        document = await _document(world, document_id)
        assert document["processingStatus"] == "COMPLETED", document
        texts = [e["node"]["content"] for e in document["sections"]["edges"]]
        assert any("unlimited liability" in t for t in texts)
        assert await _opened(world, key) == data

    # an INTERNAL file is not one Prism encrypts: stored as it came
    data = _record()
    internal = await _upload(world, data, "INTERNAL")
    assert await world.raw(await _key(world, internal)) == data


async def test_reclassification_up_seals_the_original_and_down_keeps_it_sealed(
    world: World,
) -> None:
    data = _record()
    document_id = await _upload(world, data, "INTERNAL")
    key = await _key(world, document_id)
    assert await world.raw(key) == data
    admin = world.tenant.tokens[Role.ADMIN]
    body = await gql(
        world.client, RECLASSIFY, {"id": _gid(document_id), "c": "RESTRICTED"}, token=admin
    )
    assert body.get("errors") is None, body
    sealed = await world.raw(key)
    assert sealed.startswith(MAGIC)
    assert not _clear(sealed)
    # down to PUBLIC: the file stays sealed (sealing is one-way) and still opens
    body = await gql(
        world.client, RECLASSIFY, {"id": _gid(document_id), "c": "PUBLIC"}, token=admin
    )
    assert body.get("errors") is None, body
    assert await world.raw(key) == sealed
    assert await _opened(world, key) == data
    await run_jobs(world.services)
    assert (await _document(world, document_id))["processingStatus"] == "COMPLETED"


def _prism(*args: str, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "prism.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def test_originals_seal_seals_clear_objects_resumes_and_a_rerun_changes_nothing(
    world: World,
) -> None:
    # given: originals stored in the clear before sealing existed (uploaded INTERNAL, then
    # classified in the database as an older Prism would have left them) ...
    records = [_record() for _ in range(3)]
    ids = [await _upload(world, data, "INTERNAL") for data in records]
    keys = [await _key(world, i) for i in ids]
    async with world.services.db.transaction(world.tenant.org_id) as session:
        for document_id, level in zip(
            ids[:2], (Classification.RESTRICTED, Classification.CONFIDENTIAL), strict=True
        ):
            await session.execute(
                sa.update(Document).where(Document.id == document_id).values(classification=level)
            )
    # ... and a run that was interrupted after sealing the first one
    async with world.services.db.transaction(world.tenant.org_id) as session:
        outcome = await originals.seal_stored(
            session,
            world.services.objects,
            world.services.envelope,
            world.tenant.org_id,
            keys[0],
        )
    assert outcome == "sealed"
    first = await world.raw(keys[0])

    # when: the migration runs
    report = _prism("originals", "seal", "--json", env=world.env)

    # then: the clear CONFIDENTIAL one is sealed, the sealed one left as it was, the
    # INTERNAL one untouched; every original still opens to its bytes
    assert report["sealed"] == 1
    assert report["alreadySealed"] == 1
    assert report["missing"] == 0
    assert report["failed"] == 0
    assert await world.raw(keys[0]) == first
    second = await world.raw(keys[1])
    assert second.startswith(MAGIC)
    assert not _clear(first)
    assert not _clear(second)
    assert await world.raw(keys[2]) == records[2]
    for key, data in zip(keys, records, strict=True):
        assert await _opened(world, key) == data

    # and: a second run changes nothing, byte for byte
    again = _prism("originals", "seal", "--json", env=world.env)
    assert again["sealed"] == 0
    assert again["alreadySealed"] == 2
    assert [await world.raw(k) for k in keys] == [first, second, records[2]]


async def test_a_tampered_stored_original_fails_extraction(world: World) -> None:
    data = _record()
    document_id = await _upload(world, data, "RESTRICTED")
    key = await _key(world, document_id)
    stored = bytearray(await world.raw(key))
    stored[HEADER + SEGMENT + TAG + 100] ^= 0x01  # one bit, in the second segment
    await world.overwrite(key, bytes(stored))
    await run_jobs(world.services)
    document = await _document(world, document_id)
    assert document["processingStatus"] == "FAILED"
    assert "integrity" in document["processingError"]
    assert document["sections"]["edges"] == []
    with pytest.raises(SealedObjectError):
        await _opened(world, key)


# --- the format itself ------------------------------------------------------------------------


def _seal(plain: bytes, *, key: bytes, key_id: bytes, context: bytes) -> bytes:
    reader = SealingReader(
        io.BytesIO(plain), Sealer(data_key_id=key_id, data_key=key, context=context)
    )
    out = bytearray()
    while chunk := reader.read(7000):  # odd read sizes: segment boundaries fall anywhere
        out += chunk
    return bytes(out)


async def _open(sealed: bytes, *, key: bytes, key_id: bytes, context: bytes, chunk: int) -> bytes:
    async def chunks() -> AsyncIterator[bytes]:
        for at in range(0, len(sealed), chunk):
            yield sealed[at : at + chunk]

    async def key_for(found: bytes) -> bytes:
        if found != key_id:
            raise SealedObjectError("another data key")
        return key

    return b"".join([p async for p in open_sealed(chunks(), key_for, context)])


@pytest.mark.parametrize("size", [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT + 17])
async def test_sealed_objects_round_trip_at_every_segment_boundary(size: int) -> None:
    key, key_id, context = os.urandom(32), os.urandom(16), b"org/x/documents/y"
    plain = os.urandom(size)
    sealed = _seal(plain, key=key, key_id=key_id, context=context)
    assert len(sealed) == sealed_size(size)
    for chunk in (1, 1000, SEGMENT + TAG, 1 << 20):
        assert await _open(sealed, key=key, key_id=key_id, context=context, chunk=chunk) == plain


async def test_every_kind_of_tampering_is_detected() -> None:
    key, key_id, context = os.urandom(32), os.urandom(16), b"org/x/documents/y"
    plain = os.urandom(3 * SEGMENT + 17)
    sealed = _seal(plain, key=key, key_id=key_id, context=context)
    step = SEGMENT + TAG
    segments = [sealed[HEADER + i * step : HEADER + (i + 1) * step] for i in range(4)]
    header = sealed[:HEADER]
    flipped = bytearray(sealed)
    flipped[HEADER + step + 5] ^= 0x80
    salted = bytearray(sealed)
    salted[HEADER - 1] ^= 0x01
    altered = {
        "a flipped byte": bytes(flipped),
        "a flipped salt": bytes(salted),
        "the last segment cut off": header + b"".join(segments[:3]),
        "a cut inside a segment": sealed[:-5],
        "the header only": header,
        "a segment dropped": header + segments[0] + segments[2] + segments[3],
        "two segments swapped": header + segments[1] + segments[0] + segments[2] + segments[3],
        "a segment repeated": header + segments[0] + b"".join(segments),
        "a segment added after the last": sealed + segments[1],
    }
    for what, bytes_ in altered.items():
        with pytest.raises(SealedObjectError):
            await _open(bytes_, key=key, key_id=key_id, context=context, chunk=10_000)
            pytest.fail(what)
    # copied under another object's key, or opened with another organization's data key
    with pytest.raises(SealedObjectError):
        await _open(sealed, key=key, key_id=key_id, context=b"org/x/documents/z", chunk=10_000)
    with pytest.raises(SealedObjectError):
        await _open(sealed, key=os.urandom(32), key_id=key_id, context=context, chunk=10_000)


async def test_sealing_and_opening_stream_in_constant_memory(tmp_path: Path) -> None:
    """A 48 MiB file goes through the local store sealed and back without ever being held
    whole: the peak of Python allocations stays a few chunks, far below the file."""
    size = 48 * 1024 * 1024
    source = tmp_path / "big"
    with source.open("wb") as out:
        for _ in range(size // (1 << 20)):
            out.write(os.urandom(1 << 20))
    objects: ObjectStore = LocalStore(tmp_path / "objects")
    key, key_id, context = os.urandom(32), os.urandom(16), b"big"
    tracemalloc.start()
    try:
        with source.open("rb") as plain:
            reader: Any = SealingReader(
                plain, Sealer(data_key_id=key_id, data_key=key, context=context)
            )
            await objects.put_file("big", reader, size=sealed_size(size), content_type="x")
        _, sealing_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()

        async def key_for(_found: bytes) -> bytes:
            return key

        total = 0
        async for part in open_sealed(objects.open_stream("big"), key_for, context):
            total += len(part)
        _, opening_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == size
    assert sealing_peak < 8 * 1024 * 1024, sealing_peak
    assert opening_peak < 8 * 1024 * 1024, opening_peak


# aiohttp warns about every multipart part aioboto3 sends as bytes (clear files too): not
# what this test is about.
@pytest.mark.filterwarnings("ignore:Sending a large body directly with raw bytes")
async def test_a_file_larger_than_a_multipart_part_is_sealed_into_s3_and_opens(
    s3_endpoint: str,  # noqa: F811
    bucket: str,  # noqa: F811
) -> None:
    """Above 8 MiB the S3 client uploads in parts, pulling from the sealing reader as it goes."""
    objects = S3Store(bucket=bucket, prefix="multipart/", endpoint_url=s3_endpoint)
    plain = os.urandom(9 * 1024 * 1024 + 333)
    key, key_id, name = os.urandom(32), os.urandom(16), f"org/x/documents/{uuid.uuid4()}"
    reader: Any = SealingReader(
        io.BytesIO(plain), Sealer(data_key_id=key_id, data_key=key, context=name.encode())
    )
    await objects.put_file(name, reader, size=sealed_size(len(plain)), content_type="x")

    async def key_for(_found: bytes) -> bytes:
        return key

    opened = b"".join(
        [p async for p in open_sealed(objects.open_stream(name), key_for, name.encode())]
    )
    assert opened == plain


# --- storage tiers: sealing keeps them, archived files defer, tier moves take the row lock ---


async def _set_tier(world: World, document_id: uuid.UUID, tier: StorageTier) -> None:
    """The lifecycle moved the file to ``tier`` (object and row)."""
    key = await _key(world, document_id)
    await world.services.objects.change_tier(key, tier.value)
    async with world.services.db.transaction(world.tenant.org_id) as session:
        await session.execute(
            sa.update(Document).where(Document.id == document_id).values(storage_tier=tier)
        )


@pytest.mark.parametrize("target", ["s3"], indirect=True)
async def test_sealing_keeps_the_storage_class_of_the_tier_the_file_is_on(world: World) -> None:
    objects = world.services.objects
    assert isinstance(objects, S3Store)
    admin = world.tenant.tokens[Role.ADMIN]
    for tier, storage_class in (
        (StorageTier.COLD, "GLACIER_IR"),
        (StorageTier.WARM, "STANDARD_IA"),
    ):
        document_id = await _upload(world, _record(), "INTERNAL")
        key = await _key(world, document_id)
        await _set_tier(world, document_id, tier)
        body = await gql(
            world.client, RECLASSIFY, {"id": _gid(document_id), "c": "CONFIDENTIAL"}, token=admin
        )
        assert body.get("errors") is None, body
        assert (await world.raw(key)).startswith(MAGIC)
        assert await objects.read_storage_class(key) == storage_class


@pytest.mark.parametrize("target", ["s3"], indirect=True)
async def test_reclassifying_an_archived_file_applies_and_sealing_follows_the_restore(
    world: World,
) -> None:
    data = _record()
    document_id = await _upload(world, data, "INTERNAL")
    key = await _key(world, document_id)
    await _set_tier(world, document_id, StorageTier.ARCHIVE)
    # when: the document is classified RESTRICTED while its file cannot be read
    body = await gql(
        world.client,
        RECLASSIFY,
        {"id": _gid(document_id), "c": "RESTRICTED"},
        token=world.tenant.tokens[Role.ADMIN],
    )
    # then: the classification (what governs access) applies, with no error
    assert body.get("errors") is None, body
    assert body["data"]["updateDocument"]["classification"] == "RESTRICTED"
    async with world.services.db.transaction(world.tenant.org_id) as session:
        document = await session.get(Document, document_id)
        assert document is not None
        assert document.classification is Classification.RESTRICTED
    # and the file is still listed to seal (a run before the restore fails on it, says so)
    objects, envelope = world.services.objects, world.services.envelope
    report = await originals.seal_existing(world.services.db, objects, envelope)
    assert (report.failed, report.sealed) == (1, 0)
    # after the operator restores it, `prism originals seal` seals it, on its tier
    async with aioboto3.Session().client(
        "s3", endpoint_url=world.endpoint, region_name="us-east-1"
    ) as s3:
        await s3.restore_object(Bucket=BUCKET, Key=world.prefix + key, RestoreRequest={"Days": 1})
    report = await originals.seal_existing(world.services.db, objects, envelope)
    assert (report.failed, report.sealed) == (0, 1)
    assert isinstance(objects, S3Store)
    assert await objects.read_storage_class(key) == "DEEP_ARCHIVE"


@pytest.mark.parametrize("target", ["s3"], indirect=True)
async def test_a_tier_move_waits_for_the_row_lock_sealing_holds(world: World) -> None:
    """A tier move copies the object onto itself; it takes the document row's lock first, so
    it never copies a clear file back over one sealed meanwhile."""
    objects = world.services.objects
    assert isinstance(objects, S3Store)
    document_id = await _upload(world, _record(), "INTERNAL")
    key = await _key(world, document_id)
    async with world.services.db.transaction(world.tenant.org_id) as session:
        await session.execute(
            sa.update(Document)
            .where(Document.id == document_id)
            .values(created_at=utcnow() - timedelta(days=100), retention_expires_at=None)
        )
    async with world.services.db.transaction(world.tenant.org_id) as session:
        # a reclassification holds the row (as updateDocument does while it seals)
        await session.scalar(
            sa.select(Document.id).where(Document.id == document_id).with_for_update()
        )
        move = asyncio.create_task(
            lifecycle.run_lifecycle(world.services.db, objects, world.tenant.org_id)
        )
        await asyncio.sleep(1.5)
        assert not move.done()
        assert await objects.read_storage_class(key) == "STANDARD"  # not copied meanwhile
    report = await asyncio.wait_for(move, timeout=30)
    assert dict(report.transitions) == {"HOT->WARM": 1}
    assert await objects.read_storage_class(key) == "STANDARD_IA"


# --- extraction scratch left by a killed worker -------------------------------------------


@pytest.mark.parametrize("target", ["local"], indirect=True)
async def test_a_starting_worker_removes_scratch_left_by_killed_workers_only(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed mid-extraction leaves ``prism-extract-<pid>-*/source`` (a RESTRICTED
    file, decrypted). The next worker to start removes it; a directory whose owner is alive,
    or too young to be abandoned, stays."""
    from prism.jobs.worker import Worker

    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch_root))
    finished = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await finished.wait()  # a worker that is gone (its pid no longer runs)

    def scratch(name: str, age: float = 0) -> Path:
        directory = scratch_root / name
        directory.mkdir(mode=0o700)
        (directory / "source").write_bytes(SSN.encode())
        if age:
            then = time.time() - age
            os.utime(directory, (then, then))
        return directory

    dead = scratch(f"prism-extract-{finished.pid}-abc")
    alive = scratch(f"prism-extract-{os.getpid()}-def", age=10_000)  # in use by this process
    legacy_old = scratch("prism-extract-x1y2z3", age=10_000)  # unnamed, older than the timeout
    legacy_new = scratch("prism-extract-q9w8e7")  # unnamed, may still be in use
    unrelated = scratch(f"other-{finished.pid}")

    await Worker(world.services).drain()

    assert not dead.exists()
    assert not legacy_old.exists()
    assert alive.exists()
    assert legacy_new.exists()
    assert unrelated.exists()


# --- a duplicate upload never keeps a lower classification than asked ----------------------


@pytest.mark.parametrize("target", ["local"], indirect=True)
async def test_a_duplicate_upload_asking_a_higher_classification_is_a_conflict(
    world: World,
) -> None:
    """The same bytes stored PUBLIC (in the clear) and uploaded again as RESTRICTED: CONFLICT
    on ``classification``, nothing stored; the existing document is reclassified instead.
    The same or a lower level (or none asked) answers with the existing document."""
    admin = world.tenant.tokens[Role.ADMIN]
    data = _record()
    document_id = await _upload(world, data, "PUBLIC")
    key = await _key(world, document_id)

    async def again(**fields: Any) -> dict[str, Any]:
        response = await upload(world.client, admin, "again.txt", data, **fields)
        body: dict[str, Any] = response.json()
        return body

    for status in ("COMPLETED", "FAILED"):  # a FAILED one is retried by an upload: same rule
        async with world.services.db.transaction(world.tenant.org_id) as session:
            await session.execute(
                sa.update(Document)
                .where(Document.id == document_id)
                .values(processing_status=status)
            )
        for higher in ("INTERNAL", "CONFIDENTIAL", "RESTRICTED"):
            body = await again(classification=higher)
            assert body["data"] is None, body
            [error] = body["errors"]
            assert error["extensions"]["code"] == "CONFLICT"
            assert error["extensions"]["argument"] == "classification"
        assert await world.raw(key) == data  # the stored file is untouched
    async with world.services.db.transaction(world.tenant.org_id) as session:
        count = await session.scalar(
            sa.select(sa.func.count()).select_from(Document).where(Document.sha256.is_not(None))
        )
    assert count == 1

    for fields in ({"classification": "PUBLIC"}, {}):
        body = await again(**fields)
        assert body["data"]["uploadDocument"]["deduplicated"] is True, body
        assert body["data"]["uploadDocument"]["document"]["classification"] == "PUBLIC"
    # raised on the existing document instead, a lower level asked keeps the higher one
    body = await gql(
        world.client, RECLASSIFY, {"id": _gid(document_id), "c": "RESTRICTED"}, token=admin
    )
    assert body.get("errors") is None, body
    assert (await world.raw(key)).startswith(MAGIC)
    body = await again(classification="PUBLIC")
    assert body["data"]["uploadDocument"]["document"]["classification"] == "RESTRICTED"
