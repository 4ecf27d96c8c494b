"""Backups that restore: the demo's database and files, encrypted at a destination of their
own (a directory, or a bucket of moto's S3 server), restored into an empty database and an
empty store and found byte-identical; an altered backup, a backup under another keyring and a
non-empty target refused; retention keeps the newest N."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aioboto3
import asyncpg
import pytest
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from prism import bootstrap, demo
from prism.config import Settings
from prism.crypto.keyring import LocalKeyring
from prism.db import migrations
from prism.governance import backup
from prism.services import Services
from prism.storage import LocalStore, ObjectStore, S3Store, backup_store
from tests.conftest import NewDatabase
from tests.test_storage import s3_endpoint  # noqa: F401 - the moto server


@pytest.fixture(scope="module")
async def demo_world(
    new_database: NewDatabase, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Services, str, Path]]:
    """The demo (files stored, extracted and analysed) in a database and store of its own."""
    url = await new_database()
    await asyncio.to_thread(migrations.upgrade, url)
    data_dir = tmp_path_factory.mktemp("backup-world")
    own = settings.model_copy(update={"database_url": SecretStr(url), "data_dir": data_dir})
    services = bootstrap.build_services(own, url)
    await demo.seed(services)
    yield services, url, data_dir
    await services.close()


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def _rows(url: str, query: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(False))
    try:
        return [tuple(r) for r in await conn.fetch(query)]
    finally:
        await conn.close()


async def test_the_demo_restores_into_an_empty_database_and_store_byte_identical(
    demo_world: tuple[Services, str, Path], new_database: NewDatabase, tmp_path: Path
) -> None:
    services, url, data_dir = demo_world
    keks = services.envelope.keks
    destination = LocalStore(tmp_path / "backups")
    made = await backup.create_backup(url, services.objects, destination, keks)
    source_files = _files(data_dir / "objects")
    assert any(k.startswith("org/") for k in source_files)  # the demo's documents' files
    assert made.header["summary"]["objects"] == len(source_files)
    assert made.header["kekId"] == keks.current_id

    # nothing of the data is readable in the backup: not the dump, not a file
    stored = _files(tmp_path / "backups")
    document = next(v for k, v in source_files.items() if k.startswith("org/") and len(v) > 64)
    assert all(document[:64] not in body for body in stored.values())
    assert all(b"document_sections" not in body for body in stored.values())

    # when restored into an empty database and an empty store
    target_url = await new_database()
    target = LocalStore(tmp_path / "restored")
    report = await backup.restore_backup(target_url, destination, target, keks)

    # then every table, every section and every file is what was backed up
    assert report.ok, report
    assert report.documents > 0
    assert report.sections > 0
    assert report.objects_restored == len(source_files)
    assert _files(tmp_path / "restored") == source_files
    query = "SELECT id, filename, sha256, storage_key, processing_status FROM documents ORDER BY id"
    assert await _rows(target_url, query) == await _rows(url, query)
    query = "SELECT id, document_id, content, sealed FROM document_sections ORDER BY id"
    assert await _rows(target_url, query) == await _rows(url, query)

    # and the restored database serves Prism: the app role reads it under RLS
    restored = bootstrap.build_services(
        services.settings.model_copy(
            update={"database_url": SecretStr(target_url), "data_dir": tmp_path}
        ),
        target_url,
    )
    try:
        await asyncio.to_thread(migrations.upgrade, target_url)  # a no-op at this version
        found = await demo.seed(restored)  # finds the demo organization: nothing re-created
        assert not found.created
    finally:
        await restored.close()

    # and `verify` says the same of the backup itself
    verified = await backup.verify_backup(url, destination, keks)
    assert verified.ok, verified
    assert verified.objects_checked == len(source_files)


async def test_an_altered_backup_or_another_keyring_is_refused(
    demo_world: tuple[Services, str, Path], new_database: NewDatabase, tmp_path: Path
) -> None:
    services, url, _ = demo_world
    keks = services.envelope.keks
    root = tmp_path / "backups"
    destination = LocalStore(root)
    made = await backup.create_backup(url, services.objects, destination, keks)
    folder = root / made.name

    # another keyring (the key this backup was made under is not in it)
    stranger = LocalKeyring(os.urandom(32))
    with pytest.raises(backup.BackupError, match="does not open with this keyring"):
        await backup.restore_backup(
            await new_database(), destination, LocalStore(tmp_path / "t0"), stranger
        )
    with pytest.raises(backup.BackupError, match="does not open with this keyring"):
        await backup.verify_backup(url, destination, stranger)

    def flip(path: Path) -> bytes:
        original = path.read_bytes()
        changed = bytearray(original)
        changed[len(changed) // 2] ^= 0x01
        path.write_bytes(bytes(changed))
        return original

    # one bit of one object: verify names it, restore stops at it
    victim = folder / "objects" / "00000000"
    original = flip(victim)
    verified = await backup.verify_backup(url, destination, keks, name=made.name)
    assert not verified.ok
    assert verified.objects_failed == [made.manifest["objects"][0]["key"]]
    with pytest.raises(backup.BackupError, match="unreadable: altered"):
        await backup.restore_backup(
            await new_database(), destination, LocalStore(tmp_path / "t1"), keks
        )
    victim.write_bytes(original)
    # one object put in another's place
    other = folder / "objects" / "00000001"
    victim.write_bytes(other.read_bytes())
    with pytest.raises(backup.BackupError, match="altered"):
        await backup.restore_backup(
            await new_database(), destination, LocalStore(tmp_path / "t2"), keks
        )
    victim.write_bytes(original)
    # the dump
    original = flip(folder / backup.DUMP)
    verified = await backup.verify_backup(url, destination, keks, name=made.name)
    assert not verified.ok
    assert verified.error is not None
    assert "altered" in verified.error
    with pytest.raises(backup.BackupError, match="dump unreadable"):
        await backup.restore_backup(
            await new_database(), destination, LocalStore(tmp_path / "t3"), keks
        )
    (folder / backup.DUMP).write_bytes(original)
    # the manifest
    original = flip(folder / backup.MANIFEST)
    with pytest.raises(backup.BackupError, match="manifest unreadable"):
        await backup.verify_backup(url, destination, keks, name=made.name)
    (folder / backup.MANIFEST).write_bytes(original)
    # the wrapped key in the header
    header = json.loads((folder / backup.HEADER).read_text())
    wrapped = bytearray(header["wrappedKey"].encode())
    wrapped[5] = ord("A") if wrapped[5] != ord("A") else ord("B")
    (folder / backup.HEADER).write_text(json.dumps({**header, "wrappedKey": wrapped.decode()}))
    with pytest.raises(backup.BackupError, match="does not open"):
        await backup.verify_backup(url, destination, keks, name=made.name)
    (folder / backup.HEADER).write_text(json.dumps(header))
    # put back whole, it verifies again (the checks above were of the changes, not the backup)
    assert (await backup.verify_backup(url, destination, keks, name=made.name)).ok


async def test_a_restore_refuses_a_database_or_store_that_is_not_empty(
    demo_world: tuple[Services, str, Path], new_database: NewDatabase, tmp_path: Path
) -> None:
    services, url, _ = demo_world
    keks = services.envelope.keks
    destination = LocalStore(tmp_path / "backups")
    await backup.create_backup(url, services.objects, destination, keks)
    with pytest.raises(backup.BackupError, match="empty database"):
        await backup.restore_backup(url, destination, LocalStore(tmp_path / "empty"), keks)
    used = LocalStore(tmp_path / "used")
    await backup._put_bytes(used, "something", b"x", "text/plain")
    with pytest.raises(backup.BackupError, match="store is not empty"):
        await backup.restore_backup(await new_database(), destination, used, keks)
    # --force: over what they hold
    target_url = await new_database()
    await asyncio.to_thread(migrations.upgrade, target_url)
    report = await backup.restore_backup(target_url, destination, used, keks, force=True)
    assert report.ok, report


async def test_retention_keeps_the_newest_backups(
    demo_world: tuple[Services, str, Path], tmp_path: Path
) -> None:
    services, url, _ = demo_world
    keks = services.envelope.keks
    destination = LocalStore(tmp_path / "backups")
    # a crashed run's leftovers (no header), older than anything kept
    await backup._put_bytes(destination, "20000101T000000Z-dead00/prism.dump.sealed", b"x", "x")
    names = [
        (await backup.create_backup(url, services.objects, destination, keks, keep=2)).name
        for _ in range(3)
    ]
    listed = await backup.list_backups(destination)
    assert [h["name"] for h in listed] == names[1:]
    held = {
        p.relative_to(tmp_path / "backups").parts[0]
        for p in (tmp_path / "backups").rglob("*")
        if p.is_file()
    }
    assert sorted(held) == names[1:]
    assert await backup.latest_time(destination, keks) is not None
    # Headers planted by whoever may write to the destination decide nothing: one under a
    # name of its own making, one under a backup's name with a key that does not open, one
    # copied from a real backup under another name.
    real = json.loads((tmp_path / "backups" / names[-1] / "backup.json").read_bytes())
    planted = {
        "zz-1": {"name": "zz-1", "createdAt": "9999-01-01T00:00:00+00:00"},
        "99991231T000000.000000Z-abcdef": {**real, "name": "99991231T000000.000000Z-abcdef"},
        "99991231T000000.000000Z-fedcba": real,
    }
    for name, header in planted.items():
        await backup._put_bytes(
            destination, f"{name}/backup.json", json.dumps(header).encode(), "application/json"
        )
    made_at = await backup.latest_time(destination, keks)
    assert made_at is not None
    assert made_at.year < 9999
    newest = await backup.create_backup(url, services.objects, destination, keks, keep=2)
    kept = {p.relative_to(tmp_path / "backups").parts[0] for p in (tmp_path / "backups").rglob("*")}
    assert {names[-1], newest.name} <= kept


async def test_a_backup_in_a_bucket_of_its_own_restores_into_s3(
    demo_world: tuple[Services, str, Path],
    new_database: NewDatabase,
    s3_endpoint: str,  # noqa: F811
) -> None:
    services, url, data_dir = demo_world
    keks = services.envelope.keks
    buckets = [f"backup-{uuid.uuid4().hex[:8]}", f"restored-{uuid.uuid4().hex[:8]}"]
    async with aioboto3.Session().client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1"
    ) as s3:
        for bucket in buckets:
            await s3.create_bucket(Bucket=bucket)
    settings = services.settings.model_copy(
        update={"backup_url": f"s3://{buckets[0]}/nightly?endpoint={s3_endpoint}"}
    )
    destination = backup_store(settings)
    assert isinstance(destination, S3Store)
    assert destination.prefix == "nightly/"
    made = await backup.create_backup(url, services.objects, destination, keks, keep=1)
    target: ObjectStore = S3Store(bucket=buckets[1], prefix="p/", endpoint_url=s3_endpoint)
    report = await backup.restore_backup(await new_database(), destination, target, keks)
    assert report.ok, report
    assert report.name == made.name
    restored = {
        key: b"".join([c async for c in target.open_stream(key)])
        async for key, _ in target.list_objects("")
    }
    assert restored == _files(data_dir / "objects")


def _prism(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prism.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


async def test_backup_commands_create_list_verify_and_restore(
    new_database: NewDatabase, tmp_path: Path
) -> None:
    source, target = await new_database(), await new_database()
    base = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
    base.update(
        PRISM_LOG_LEVEL="WARNING",
        PRISM_ENCRYPTION_KEY=os.urandom(32).hex(),
        PRISM_BACKUP_URL=f"file://{tmp_path / 'backups'}",
    )
    env = {**base, "PRISM_DATABASE_URL": source, "PRISM_DATA_DIR": str(tmp_path / "a")}
    (tmp_path / "a" / "objects" / "org" / "x").mkdir(parents=True)
    (tmp_path / "a" / "objects" / "org" / "x" / "file").write_bytes(b"a file\x00\xff")
    created = await asyncio.to_thread(_prism, "backup", "create", env=env)
    assert created.returncode == 0, created.stderr
    name = created.stdout.strip().splitlines()[-1]
    listed = await asyncio.to_thread(_prism, "backup", "list", "--json", env=env)
    assert [h["name"] for h in json.loads(listed.stdout)] == [name]
    verified = await asyncio.to_thread(_prism, "backup", "verify", "--json", env=env)
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["ok"] is True
    elsewhere = {**base, "PRISM_DATABASE_URL": target, "PRISM_DATA_DIR": str(tmp_path / "b")}
    restored = await asyncio.to_thread(_prism, "backup", "restore", "--json", env=elsewhere)
    assert restored.returncode == 0, restored.stderr
    said = json.loads(restored.stdout)
    assert said["ok"] is True
    assert said["objectsRestored"] == 1
    assert (tmp_path / "b" / "objects" / "org" / "x" / "file").read_bytes() == b"a file\x00\xff"
    # a second restore finds the database no longer empty: refused, in one line
    again = await asyncio.to_thread(_prism, "backup", "restore", env=elsewhere)
    assert again.returncode == 1
    assert again.stderr.strip().startswith("error:")
    assert "empty database" in again.stderr
    # under another keyring: refused
    stranger = {**elsewhere, "PRISM_ENCRYPTION_KEY": os.urandom(32).hex()}
    refused = await asyncio.to_thread(_prism, "backup", "restore", "--force", env=stranger)
    assert refused.returncode == 1
    assert "does not open with this keyring" in refused.stderr
