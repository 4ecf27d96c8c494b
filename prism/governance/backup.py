"""Verified backups: ``pg_dump`` (custom format) to the object store with a manifest of row
counts and checksums per table, taken from the same snapshot as the dump; verification
restores the dump into a scratch database and compares every table with the manifest.

Runs as the login user (the schema owner), not as prism_app: a backup sees every
organization's rows, which is why it is an operator command and not an API field."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from prism.db.engine import libpq_url, url_for_asyncpg
from prism.models import backup as backup_models
from prism.models.backup import table_fingerprints
from prism.storage import ObjectStore

PREFIX = "backups/"
LATEST = PREFIX + "LATEST"
MANIFEST_VERSION = 1


class BackupError(RuntimeError):
    """A backup could not be made or read (a tool is missing, a command failed)."""


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


@dataclass(frozen=True)
class BackupResult:
    name: str
    manifest: dict[str, Any]


async def create_backup(
    url: str, objects: ObjectStore, *, bin_dir: Path | None = None
) -> BackupResult:
    pg_dump = find_pg_binary("pg_dump", bin_dir)
    name = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    conn = await _connect(url)
    try:
        # The manifest and the dump read one snapshot: what is counted is what is dumped.
        transaction = conn.transaction(isolation="repeatable_read", readonly=True)
        await transaction.start()
        try:
            snapshot = await backup_models.export_snapshot(conn)
            tables = await table_fingerprints(conn)
            database, server_version = await backup_models.server_identity(conn)
            with tempfile.TemporaryDirectory(prefix="prism-backup-") as scratch:
                dump = Path(scratch) / "prism.dump"
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
                size = dump.stat().st_size
                checksum = await asyncio.to_thread(_sha256, dump)
                dump_key = f"{PREFIX}{name}/prism.dump"
                with dump.open("rb") as source:
                    await objects.put_file(
                        dump_key, source, size=size, content_type="application/octet-stream"
                    )
        finally:
            await transaction.rollback()
    finally:
        await conn.close()
    manifest = {
        "version": MANIFEST_VERSION,
        "name": name,
        "createdAt": datetime.now(UTC).isoformat(),
        "database": database,
        "serverVersion": server_version,
        "dump": {"key": dump_key, "format": "pg_dump custom", "bytes": size, "sha256": checksum},
        "tables": tables,
    }
    await _put_json(objects, f"{PREFIX}{name}/manifest.json", manifest)
    await _put_bytes(objects, LATEST, name.encode())
    return BackupResult(name=name, manifest=manifest)


async def _put_bytes(objects: ObjectStore, key: str, data: bytes) -> None:
    with tempfile.TemporaryFile() as buffer:
        buffer.write(data)
        buffer.seek(0)
        await objects.put_file(key, buffer, size=len(data), content_type="application/json")


async def _put_json(objects: ObjectStore, key: str, value: dict[str, Any]) -> None:
    await _put_bytes(objects, key, json.dumps(value, indent=2, sort_keys=True).encode())


async def _read(objects: ObjectStore, key: str) -> bytes:
    chunks = [chunk async for chunk in objects.open_stream(key)]
    return b"".join(chunks)


def _reason(exc: BaseException) -> str:
    """Why an object could not be read, without the store's paths or the client's text."""
    if isinstance(exc, FileNotFoundError) or "NoSuchKey" in str(exc) or "404" in str(exc):
        return "not found"
    if isinstance(exc, PermissionError) or "AccessDenied" in str(exc):
        return "access denied"
    return type(exc).__name__


@dataclass(frozen=True)
class TableCheck:
    table: str
    expected_rows: int | None
    actual_rows: int | None
    checksum_matches: bool

    @property
    def ok(self) -> bool:
        return self.checksum_matches and self.expected_rows == self.actual_rows


@dataclass
class VerifyReport:
    name: str
    dump_checksum_matches: bool = False
    restored: bool = False
    error: str | None = None
    tables: list[TableCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.dump_checksum_matches
            and self.restored
            and self.error is None
            and bool(self.tables)
            and all(t.ok for t in self.tables)
        )


async def verify_backup(
    url: str, objects: ObjectStore, *, name: str | None = None, bin_dir: Path | None = None
) -> VerifyReport:
    """Restore the backup ``name`` (default: the latest) into a scratch database on the same
    server and compare it with its manifest; the scratch database is dropped afterwards."""
    pg_restore = find_pg_binary("pg_restore", bin_dir)
    if name is None:
        try:
            name = (await _read(objects, LATEST)).decode().strip()
        except Exception as exc:
            raise BackupError("No backup to verify (none was made in this store).") from exc
    report = VerifyReport(name=name)
    try:
        manifest = json.loads(await _read(objects, f"{PREFIX}{name}/manifest.json"))
        expected: dict[str, dict[str, Any]] = manifest["tables"]
    except Exception as exc:  # noqa: BLE001 - a missing or unreadable manifest is the report
        report.error = f"manifest of {name} unreadable: {_reason(exc)}"
        return report
    scratch_db = f"prism_verify_{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory(prefix="prism-verify-") as scratch:
        dump = Path(scratch) / "prism.dump"
        try:
            with dump.open("wb") as out:
                async for chunk in objects.open_stream(manifest["dump"]["key"]):
                    out.write(chunk)
        except Exception as exc:  # noqa: BLE001 - a missing or unreadable dump is the report
            report.error = f"dump {manifest['dump']['key']} unreadable: {_reason(exc)}"
            return report
        report.dump_checksum_matches = (
            await asyncio.to_thread(_sha256, dump) == manifest["dump"]["sha256"]
        )
        admin = await _connect(url, "postgres")
        try:
            await backup_models.create_database(admin, scratch_db)
            try:
                target, env = libpq_url(url, scratch_db)
                try:
                    # Data is what is compared: owners and grants are left out, so the dump
                    # also restores on a server without Prism's roles.
                    await _run(
                        [
                            pg_restore,
                            "--no-owner",
                            "--no-privileges",
                            "--exit-on-error",
                            f"--dbname={target}",
                            str(dump),
                        ],
                        env,
                    )
                    report.restored = True
                except BackupError as exc:
                    report.error = str(exc)
                if report.restored:
                    restored_conn = await _connect(url, scratch_db)
                    try:
                        actual = await table_fingerprints(restored_conn)
                    finally:
                        await restored_conn.close()
                    for table in sorted(set(expected) | set(actual)):
                        want, got = expected.get(table), actual.get(table)
                        report.tables.append(
                            TableCheck(
                                table=table,
                                expected_rows=want["rows"] if want else None,
                                actual_rows=got["rows"] if got else None,
                                checksum_matches=bool(
                                    want and got and want["checksum"] == got["checksum"]
                                ),
                            )
                        )
            finally:
                await backup_models.drop_database(admin, scratch_db)
        finally:
            await admin.close()
    return report
