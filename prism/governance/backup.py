"""Backups that restore: the database (``pg_dump``, custom format) and every object of the
object store, encrypted, written to a destination of their own (PRISM_BACKUP_URL: another
bucket or a directory, never beside the data), kept for PRISM_BACKUP_KEEP runs.

A backup ``<name>/`` holds:

- ``prism.dump.sealed``: the dump;
- ``objects/<n>``: each object of the store, as stored (sealed originals stay sealed);
- ``manifest.sealed``: row count and checksum of every table (read from the dump's own
  snapshot), and key, size and sha256 of every object and of the dump;
- ``backup.json``, written last (a backup without it is incomplete): the format, the name, the
  key-encryption key's id and the backup's key wrapped by it, and a summary.

Every file but ``backup.json`` is a sealed stream (``prism.crypto.sealed``: AES-256-GCM in 64
KiB segments, a key per file derived from the backup's own random key and the file's path), so
nothing is held in memory whole and a file altered, cut, swapped with another or moved fails
to open. The backup's key is wrapped by the keyring (local KEK or AWS KMS) with the backup's
name as context: without that keyring, nothing opens.

Verification restores into a scratch database and compares every table with the manifest, and
opens every object and compares its sha256. Restoration writes into an empty database and an
empty store, then verifies the same way against what it wrote.

Runs as the login user (the schema owner), not as prism_app: a backup sees every
organization's rows, which is why it is an operator command and a worker's schedule, never an
API field.

Long because: making, verifying and restoring a backup are three readings of one format (the
sealed files, the manifest, the header and its wrapped key); kept together, the format has one
home."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import asyncpg
import structlog

from prism.crypto.keyring import KeyEncryptionKeys, KeyUnavailable
from prism.crypto.sealed import SealedObjectError, Sealer, SealingReader, open_sealed
from prism.db.engine import libpq_url, url_for_asyncpg
from prism.models import backup as backup_models
from prism.models.backup import table_fingerprints
from prism.storage import ObjectStore

FORMAT = 2
HEADER = "backup.json"
MANIFEST = "manifest.sealed"
DUMP = "prism.dump.sealed"
# Backups of format 1 lived in the data's own store under this prefix: never copied into a
# new backup (a backup of backups).
LEGACY_PREFIX = "backups/"
CIPHER = "AES-256-GCM, 64 KiB segments, HKDF-SHA256 key per file (prism.crypto.sealed)"
log = structlog.get_logger("prism.backup")


class BackupError(RuntimeError):
    """A backup could not be made, read or restored (a tool is missing, a command failed, the
    key does not open it, a file was altered, the target is not empty)."""


def find_pg_binary(name: str, bin_dir: Path | None = None) -> str:
    """``pg_dump``/``pg_restore``: from PRISM_PG_BIN_DIR, else the embedded PostgreSQL's own
    (pgserver's, the same version as its server), else PATH."""
    candidates: list[Path] = []
    if bin_dir is not None:
        candidates.append(bin_dir / name)
    try:
        import pgserver
    except ImportError:
        pass
    else:
        candidates.append(Path(pgserver.__file__).parent / "pginstall" / "bin" / name)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise BackupError(
            f"{name} not found: set PRISM_PG_BIN_DIR, install the `embedded` extra, or put "
            "PostgreSQL's client tools on PATH."
        )
    return found


async def _run(args: list[str], env: dict[str, str]) -> None:
    process = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await process.communicate()
    if process.returncode != 0:
        tool = Path(args[0]).name
        message = stderr.decode(errors="replace").strip().splitlines()
        raise BackupError(f"{tool} failed: {message[-1] if message else process.returncode}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


async def _connect(url: str, database: str | None = None) -> asyncpg.Connection:
    conn: asyncpg.Connection = await asyncpg.connect(
        url_for_asyncpg(url, database), server_settings={"TimeZone": "UTC"}
    )
    return conn


def _reason(exc: BaseException) -> str:
    """Why an object could not be read, without the store's paths or the client's text."""
    if isinstance(exc, FileNotFoundError) or "NoSuchKey" in str(exc) or "404" in str(exc):
        return "not found"
    if isinstance(exc, PermissionError) or "AccessDenied" in str(exc):
        return "access denied"
    if isinstance(exc, SealedObjectError):
        return f"altered or not of this backup ({exc})"
    return type(exc).__name__


# --- the backup's key and its sealed files -----------------------------------------------------


@dataclass(frozen=True)
class _Key:
    """A backup's own key: random, wrapped by the keyring; every file's key derives from it."""

    backup_id: uuid.UUID
    name: str
    key: bytes

    def sealer(self, path: str) -> Sealer:
        return Sealer(data_key_id=self.backup_id.bytes, data_key=self.key, context=self._at(path))

    def _at(self, path: str) -> bytes:
        return f"prism-backup:{self.name}/{path}".encode()

    async def open(self, store: ObjectStore, path: str) -> AsyncIterator[bytes]:
        async def key_for(key_id: bytes) -> bytes:
            if key_id != self.backup_id.bytes:
                raise SealedObjectError("sealed by another backup")
            return self.key

        async for plain in open_sealed(
            store.open_stream(f"{self.name}/{path}"), key_for, self._at(path)
        ):
            yield plain


def _wrap_context(name: str, backup_id: uuid.UUID) -> bytes:
    return b"prism-backup:" + name.encode() + b":" + backup_id.bytes


async def _put_sealed(
    destination: ObjectStore, key: _Key, path: str, source: IO[bytes], size: int
) -> None:
    reader = SealingReader(cast(BinaryIO, source), key.sealer(path))
    await destination.put_file(
        f"{key.name}/{path}",
        reader,  # type: ignore[arg-type]
        size=size,
        content_type="application/octet-stream",
    )


async def _put_bytes(store: ObjectStore, key: str, data: bytes, content_type: str) -> None:
    with tempfile.TemporaryFile() as buffer:
        buffer.write(data)
        buffer.seek(0)
        await store.put_file(key, buffer, size=len(data), content_type=content_type)


async def _read(store: ObjectStore, key: str) -> bytes:
    return b"".join([chunk async for chunk in store.open_stream(key)])


async def _spool(chunks: AsyncIterator[bytes], out: IO[bytes]) -> tuple[int, str]:
    """Write ``chunks`` to ``out``: (bytes, sha256)."""
    digest = hashlib.sha256()
    size = 0
    async for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
        out.write(chunk)
    out.flush()
    return size, digest.hexdigest()


# --- create ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupResult:
    name: str
    header: dict[str, Any]
    manifest: dict[str, Any]
    removed: list[str] = field(default_factory=list)


def new_name(now: datetime | None = None) -> str:
    """Sortable by time: ``YYYYMMDDTHHMMSS.ffffffZ-xxxxxx``."""
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S.%fZ") + "-" + uuid.uuid4().hex[:6]


async def create_backup(
    url: str,
    objects: ObjectStore,
    destination: ObjectStore,
    keks: KeyEncryptionKeys,
    *,
    keep: int | None = None,
    bin_dir: Path | None = None,
) -> BackupResult:
    """Back up the database at ``url`` and every object of ``objects`` to ``destination``,
    encrypted; then keep the newest ``keep`` complete backups there (None: all)."""
    pg_dump = find_pg_binary("pg_dump", bin_dir)
    name = new_name()
    backup_id = uuid.uuid4()
    raw = secrets.token_bytes(32)
    kek_id, wrapped = await keks.wrap(raw, _wrap_context(name, backup_id))
    key = _Key(backup_id=backup_id, name=name, key=raw)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="prism-backup-") as scratch:
        dump = Path(scratch) / "prism.dump"
        conn = await _connect(url)
        try:
            # The manifest and the dump read one snapshot: what is counted is what is dumped.
            transaction = conn.transaction(isolation="repeatable_read", readonly=True)
            await transaction.start()
            try:
                snapshot = await backup_models.export_snapshot(conn)
                snapshot_at = datetime.now(UTC)
                tables = await table_fingerprints(conn)
                database, server_version = await backup_models.server_identity(conn)
                target, env = libpq_url(url)
                await _run(
                    [
                        pg_dump,
                        "--format=custom",
                        f"--snapshot={snapshot}",
                        f"--file={dump}",
                        f"--dbname={target}",
                    ],
                    env,
                )
            finally:
                await transaction.rollback()  # the snapshot is not held while uploading
        finally:
            await conn.close()
        dump_size = dump.stat().st_size
        dump_sha = await asyncio.to_thread(_sha256, dump)
        with dump.open("rb") as source:
            await _put_sealed(destination, key, DUMP, source, dump_size)
    # Objects after the snapshot: a file is written before its row commits and removed after
    # its row is deleted, so every file a row of the dump names is there (unless removed in
    # between, which the restore's check of document files reports).
    entries: list[dict[str, Any]] = []
    vanished = 0
    listed = [item async for item in objects.list_objects("")]
    for object_key, _ in listed:
        if object_key.startswith(LEGACY_PREFIX):
            continue
        path = f"objects/{len(entries):08d}"
        with tempfile.TemporaryFile(prefix="prism-backup-") as spool:
            try:
                size, sha = await _spool(objects.open_stream(object_key), spool)
            except FileNotFoundError:
                vanished += 1  # deleted since listed (LocalStore)
                continue
            except Exception as exc:
                if _reason(exc) == "not found":
                    vanished += 1
                    continue
                raise
            spool.seek(0)
            await _put_sealed(destination, key, path, spool, size)
        entries.append({"key": object_key, "bytes": size, "sha256": sha, "file": path})
    manifest = {
        "format": FORMAT,
        "name": name,
        "database": database,
        "serverVersion": server_version,
        "dump": {"file": DUMP, "format": "pg_dump custom", "bytes": dump_size, "sha256": dump_sha},
        "tables": tables,
        "objects": entries,
        "objectsVanished": vanished,
    }
    body = json.dumps(manifest, sort_keys=True).encode()
    with tempfile.TemporaryFile() as buffer:
        buffer.write(body)
        buffer.seek(0)
        await _put_sealed(destination, key, MANIFEST, buffer, len(body))
    summary: dict[str, Any] = {
        "dumpBytes": dump_size,
        "tables": len(tables),
        "rows": sum(t["rows"] for t in tables.values()),
        "objects": len(entries),
        "objectBytes": sum(e["bytes"] for e in entries),
        "seconds": round(time.monotonic() - started, 3),
    }
    header = {
        "format": FORMAT,
        "name": name,
        "id": str(backup_id),
        # The database as of snapshotAt (the recovery point); made by createdAt.
        "snapshotAt": snapshot_at.isoformat(),
        "createdAt": datetime.now(UTC).isoformat(),
        "cipher": CIPHER,
        "kekId": kek_id,
        "wrappedKey": base64.b64encode(wrapped).decode(),
        "summary": summary,
    }
    await _put_bytes(
        destination,
        f"{name}/{HEADER}",
        json.dumps(header, indent=2, sort_keys=True).encode(),
        "application/json",
    )
    removed = await prune(destination, keep, keks) if keep else []
    log.info("backup made", backup=name, kek_id=kek_id, **summary, removed=len(removed))
    return BackupResult(name=name, header=header, manifest=manifest, removed=removed)


# --- list, prune -------------------------------------------------------------------------------


async def _names(destination: ObjectStore) -> tuple[list[str], set[str]]:
    """(every backup name found, those complete), oldest first."""
    names: set[str] = set()
    complete: set[str] = set()
    async for key, _ in destination.list_objects(""):
        head, _, rest = key.partition("/")
        if not rest:
            continue
        names.add(head)
        if rest == HEADER:
            complete.add(head)
    return sorted(names), complete


async def list_backups(destination: ObjectStore) -> list[dict[str, Any]]:
    """The complete backups, oldest first: each one's header (no key is opened)."""
    names, complete = await _names(destination)
    found: list[dict[str, Any]] = []
    for name in names:
        if name in complete:
            header: dict[str, Any] = json.loads(await _read(destination, f"{name}/{HEADER}"))
            found.append(header)
    return found


# A backup's name, as ``new_name`` makes it: the time it was begun, then a random tail.
_NAME = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{6}$")


async def _genuine(
    destination: ObjectStore, keks: KeyEncryptionKeys, names: list[str]
) -> AsyncIterator[str]:
    """Those of ``names`` (complete backups) that Prism made: a name as ``new_name`` makes
    it, a header naming its own directory, and a key that opens with this keyring under the
    name and id it was wrapped with. What anyone else may have written to the destination
    (a header planted to look newest, a header copied under another name) is ignored, so it
    decides neither what is pruned nor when the next backup is due."""
    for name in names:
        if not _NAME.match(name):
            log.warning("not a backup's name at the backup destination; ignored", name=name)
            continue
        try:
            header = json.loads(await _read(destination, f"{name}/{HEADER}"))
            if header.get("name") != name:
                raise ValueError("the header names another backup")
            await keks.unwrap(
                header["kekId"],
                base64.b64decode(header["wrappedKey"]),
                _wrap_context(name, uuid.UUID(header["id"])),
            )
        except Exception as exc:  # noqa: BLE001 - not Prism's: ignored, and said
            log.warning("backup not genuine; ignored", backup=name, error=type(exc).__name__)
            continue
        yield name


def _made_at(name: str) -> datetime:
    return datetime.strptime(name[:23], "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC)


async def latest_time(destination: ObjectStore, keks: KeyEncryptionKeys) -> datetime | None:
    """When the newest genuine complete backup was begun (None: there is none): the time its
    name says, which its key is bound to."""
    names, complete = await _names(destination)
    newest_first = [n for n in reversed(names) if n in complete]
    async for name in _genuine(destination, keks, newest_first):
        return _made_at(name)
    return None


async def prune(destination: ObjectStore, keep: int, keks: KeyEncryptionKeys) -> list[str]:
    """Remove all but the newest ``keep`` genuine complete backups, and whatever else is older
    than the oldest kept (a crashed run's leftovers; a newer incomplete one may be in
    progress). Returns the names removed."""
    names, complete = await _names(destination)
    genuine = [n async for n in _genuine(destination, keks, [n for n in names if n in complete])]
    kept = genuine[-keep:]
    if not kept:
        return []
    doomed = [n for n in names if n not in kept and n < kept[0]]
    for name in doomed:
        # The header first: a backup half removed is incomplete, never taken for whole.
        await destination.delete(f"{name}/{HEADER}")
        async for key, _ in destination.list_objects(f"{name}/"):
            await destination.delete(key)
    return doomed


# --- open a backup -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Opened:
    key: _Key
    header: dict[str, Any]
    manifest: dict[str, Any]


async def _resolve_name(destination: ObjectStore, name: str | None, keks: KeyEncryptionKeys) -> str:
    if name is not None:
        return name
    names, complete = await _names(destination)
    done = [n for n in reversed(names) if n in complete]
    async for found in _genuine(destination, keks, done):
        return found
    if done:
        # None is genuine: the newest one says why (a key that does not open with this
        # keyring, an altered header).
        await _open(destination, keks, done[0])
    raise BackupError("No backup to use (none was made at the backup destination).")


async def _open(destination: ObjectStore, keks: KeyEncryptionKeys, name: str) -> _Opened:
    """The backup's header, key and manifest; BackupError if it is missing, does not open with
    this keyring, or was altered."""
    try:
        header = json.loads(await _read(destination, f"{name}/{HEADER}"))
    except Exception as exc:
        raise BackupError(f"backup {name}: manifest unreadable: {_reason(exc)}") from exc
    if header.get("format") != FORMAT:
        raise BackupError(f"backup {name}: format {header.get('format')} is not {FORMAT}")
    try:
        backup_id = uuid.UUID(header["id"])
        wrapped = base64.b64decode(header["wrappedKey"])
        raw = await keks.unwrap(header["kekId"], wrapped, _wrap_context(name, backup_id))
    except KeyUnavailable as exc:
        raise BackupError(
            f"backup {name}: its key does not open with this keyring (KEK {header.get('kekId')}:"
            f" {exc.reason}); the keyring it was made with is needed, or the header was altered"
        ) from exc
    except (KeyError, ValueError) as exc:
        raise BackupError(f"backup {name}: header altered ({type(exc).__name__})") from exc
    key = _Key(backup_id=backup_id, name=name, key=raw)
    try:
        body = b"".join([chunk async for chunk in key.open(destination, MANIFEST)])
        manifest = json.loads(body)
    except Exception as exc:
        raise BackupError(f"backup {name}: manifest unreadable: {_reason(exc)}") from exc
    return _Opened(key=key, header=header, manifest=manifest)


async def _fetch_dump(opened: _Opened, destination: ObjectStore, path: Path) -> bool:
    """Decrypt the dump to ``path``; True if its sha256 is the manifest's."""
    with path.open("wb") as out:
        _, sha = await _spool(opened.key.open(destination, DUMP), out)
    return bool(sha == opened.manifest["dump"]["sha256"])


@dataclass(frozen=True)
class TableCheck:
    table: str
    expected_rows: int | None
    actual_rows: int | None
    checksum_matches: bool

    @property
    def ok(self) -> bool:
        return self.checksum_matches and self.expected_rows == self.actual_rows


def _compare(expected: dict[str, dict[str, Any]], actual: dict[str, Any]) -> list[TableCheck]:
    checks = []
    for table in sorted(set(expected) | set(actual)):
        want, got = expected.get(table), actual.get(table)
        checks.append(
            TableCheck(
                table=table,
                expected_rows=want["rows"] if want else None,
                actual_rows=got["rows"] if got else None,
                checksum_matches=bool(want and got and want["checksum"] == got["checksum"]),
            )
        )
    return checks


async def _pg_restore(url: str, database: str | None, dump: Path, *, bin_dir: Path | None) -> None:
    pg_restore = find_pg_binary("pg_restore", bin_dir)
    target, env = libpq_url(url, database)
    # Owners are left out (the restoring login owns what it restores, as the migrations'
    # login did); grants to prism_app are kept, so the restored database serves as it was.
    args = [pg_restore, "--no-owner", "--exit-on-error", f"--dbname={target}"]
    await _run([*args, str(dump)], env)


# --- verify ------------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    name: str
    dump_checksum_matches: bool = False
    restored: bool = False
    error: str | None = None
    tables: list[TableCheck] = field(default_factory=list)
    objects_checked: int = 0
    objects_failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.dump_checksum_matches
            and self.restored
            and self.error is None
            and bool(self.tables)
            and all(t.ok for t in self.tables)
            and not self.objects_failed
        )


async def verify_backup(
    url: str,
    destination: ObjectStore,
    keks: KeyEncryptionKeys,
    *,
    name: str | None = None,
    bin_dir: Path | None = None,
) -> VerifyReport:
    """Restore the backup ``name`` (default: the newest) into a scratch database on the server
    of ``url`` and compare it with its manifest, and open every object and compare its
    sha256; the scratch database is dropped afterwards. A backup that does not open (wrong
    keyring, altered header or manifest) raises BackupError."""
    name = await _resolve_name(destination, name, keks)
    report = VerifyReport(name=name)
    opened = await _open(destination, keks, name)
    scratch_db = f"prism_verify_{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory(prefix="prism-verify-") as scratch:
        dump = Path(scratch) / "prism.dump"
        try:
            report.dump_checksum_matches = await _fetch_dump(opened, destination, dump)
        except Exception as exc:  # noqa: BLE001 - a missing or altered dump is the report
            report.error = f"dump {name}/{DUMP} unreadable: {_reason(exc)}"
            return report
        admin = await _connect(url, "postgres")
        try:
            await backup_models.create_database(admin, scratch_db)
            try:
                try:
                    await _pg_restore(url, scratch_db, dump, bin_dir=bin_dir)
                    report.restored = True
                except BackupError as exc:
                    report.error = str(exc)
                if report.restored:
                    restored_conn = await _connect(url, scratch_db)
                    try:
                        actual = await table_fingerprints(restored_conn)
                    finally:
                        await restored_conn.close()
                    report.tables = _compare(opened.manifest["tables"], actual)
            finally:
                await backup_models.drop_database(admin, scratch_db)
        finally:
            await admin.close()
    for entry in opened.manifest["objects"]:
        report.objects_checked += 1
        try:
            digest = hashlib.sha256()
            async for chunk in opened.key.open(destination, entry["file"]):
                digest.update(chunk)
            if digest.hexdigest() != entry["sha256"]:
                report.objects_failed.append(entry["key"])
        except Exception:  # noqa: BLE001 - an unreadable object is the report
            report.objects_failed.append(entry["key"])
    return report


# --- restore -----------------------------------------------------------------------------------


@dataclass
class RestoreReport:
    name: str
    tables: list[TableCheck] = field(default_factory=list)
    documents: int = 0
    sections: int = 0
    objects_restored: int = 0
    object_bytes: int = 0
    dump_bytes: int = 0
    # Objects whose bytes in the restored store differ from the manifest's sha256.
    objects_mismatched: list[str] = field(default_factory=list)
    # Files of (not deleted) documents of the restored database that the backup lacks.
    files_missing: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            bool(self.tables)
            and all(t.ok for t in self.tables)
            and not self.objects_mismatched
            and not self.files_missing
        )


async def restore_backup(
    url: str,
    destination: ObjectStore,
    objects: ObjectStore,
    keks: KeyEncryptionKeys,
    *,
    name: str | None = None,
    force: bool = False,
    bin_dir: Path | None = None,
) -> RestoreReport:
    """Restore the backup ``name`` (default: the newest) into the database at ``url`` and the
    store ``objects``, both empty (``force``: over what they hold, dropping the database's
    objects first), then verify both against the manifest. Any file that does not open or
    differs from the manifest stops the restore (BackupError)."""
    started = time.monotonic()
    name = await _resolve_name(destination, name, keks)
    opened = await _open(destination, keks, name)
    manifest = opened.manifest
    conn = await _connect(url)
    try:
        tables = await backup_models.count_tables(conn)
        if tables and not force:
            raise BackupError(
                f"the database holds {tables} tables: a restore goes into an empty database "
                "(create one, or pass --force to replace what it holds)"
            )
        await backup_models.ensure_app_role(conn)
        if tables and force:
            await backup_models.clear_public_schema(conn)
    finally:
        await conn.close()
    if not force:
        async for key, _ in objects.list_objects(""):
            raise BackupError(
                f"the object store is not empty (it holds {key!r}): a restore goes into an "
                "empty store (or pass --force to write over it)"
            )
    report = RestoreReport(name=name, dump_bytes=manifest["dump"]["bytes"])
    with tempfile.TemporaryDirectory(prefix="prism-restore-") as scratch:
        dump = Path(scratch) / "prism.dump"
        try:
            matches = await _fetch_dump(opened, destination, dump)
        except Exception as exc:
            raise BackupError(f"backup {name}: dump unreadable: {_reason(exc)}") from exc
        if not matches:
            raise BackupError(f"backup {name}: the dump's sha256 is not the manifest's")
        await _pg_restore(url, None, dump, bin_dir=bin_dir)
    for entry in manifest["objects"]:
        with tempfile.TemporaryFile(prefix="prism-restore-") as spool:
            try:
                size, sha = await _spool(opened.key.open(destination, entry["file"]), spool)
            except Exception as exc:
                raise BackupError(
                    f"backup {name}: object {entry['key']} unreadable: {_reason(exc)}"
                ) from exc
            if sha != entry["sha256"] or size != entry["bytes"]:
                raise BackupError(f"backup {name}: object {entry['key']} is not the manifest's")
            spool.seek(0)
            await objects.put_file(
                entry["key"], spool, size=size, content_type="application/octet-stream"
            )
        report.objects_restored += 1
        report.object_bytes += size
    # Verify what was written, read back from where it now is.
    conn = await _connect(url)
    try:
        actual = await table_fingerprints(conn)
        files = await backup_models.document_files(conn)
    finally:
        await conn.close()
    report.tables = _compare(manifest["tables"], actual)
    report.documents = int(actual.get("documents", {}).get("rows", 0))
    report.sections = int(actual.get("document_sections", {}).get("rows", 0))
    expected = {e["key"]: e["sha256"] for e in manifest["objects"]}
    report.files_missing = sorted(files - set(expected))
    for key, sha in expected.items():
        digest = hashlib.sha256()
        try:
            async for chunk in objects.open_stream(key):
                digest.update(chunk)
        except Exception:  # noqa: BLE001 - a missing object is a mismatch
            report.objects_mismatched.append(key)
            continue
        if digest.hexdigest() != sha:
            report.objects_mismatched.append(key)
    report.seconds = time.monotonic() - started
    log.info(
        "backup restored",
        backup=name,
        ok=report.ok,
        documents=report.documents,
        objects=report.objects_restored,
        seconds=round(report.seconds, 3),
    )
    return report
