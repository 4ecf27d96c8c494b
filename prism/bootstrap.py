"""Turning settings into running parts: the database URL (embedded or given), migrations,
and the process-wide services the server and the CLI share."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from prism.analysis import Analyzers
from prism.authn.secrets import AccessTokens, Passwords, SecretBox, load_or_create_key
from prism.cache.store import build_store
from prism.config import Settings
from prism.crypto.envelope import Envelope
from prism.crypto.keyring import key_encryption_keys
from prism.crypto.links import ExportLinks
from prism.db import embedded, migrations
from prism.db.engine import Database, create_engine, create_statement_pool
from prism.jobs.worker import Worker
from prism.mail import Mailer
from prism.models.audit import ensure_audit_partitions as ensure_partitions
from prism.operations.registry import OperationRegistry
from prism.search import build_search
from prism.services import Services
from prism.storage import object_store

AUDIT_MONTHS_AHEAD = 3
# Tells `uvicorn --factory` worker processes of `prism serve` to run a job worker too.
WITH_WORKER_ENV = "PRISM_INTERNAL_WITH_WORKER"


async def prepare_database(settings: Settings) -> str:
    """Resolve the URL, create the embedded database if needed, and apply migrations."""
    if settings.database_url is not None:
        url = settings.database_url.get_secret_value()
    else:
        url = await asyncio.to_thread(embedded.start, settings.data_dir)
        await embedded.ensure_database(url)
    await asyncio.to_thread(migrations.upgrade, url)
    return url


def jwt_key(settings: Settings) -> bytes:
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value().encode()
    if settings.production:
        raise RuntimeError("PRISM_JWT_SECRET must be set in production mode.")
    return load_or_create_key(settings.data_dir / "jwt.key")


def access_tokens(settings: Settings) -> AccessTokens:
    return AccessTokens(
        jwt_key(settings),
        key_id=settings.jwt_key_id,
        ttl=timedelta(seconds=settings.access_token_ttl_seconds),
    )


def server_key(settings: Settings) -> bytes:
    """PRISM_ENCRYPTION_KEY, or the 0600 key file: it seals MFA secrets (SecretBox) and is the
    first key-encryption key of the local keyring."""
    if settings.encryption_key is not None:
        return _hex_key(settings.encryption_key.get_secret_value(), "PRISM_ENCRYPTION_KEY")
    return load_or_create_key(settings.data_dir / "encryption.key")


def retired_keys(settings: Settings) -> tuple[bytes, ...]:
    retired = settings.encryption_retired_keys
    old = [k.strip() for k in retired.get_secret_value().split(",")] if retired else []
    return tuple(_hex_key(k, "PRISM_ENCRYPTION_RETIRED_KEYS") for k in old if k)


def envelope(settings: Settings, db: Database) -> Envelope:
    keks = key_encryption_keys(settings, server_key(settings), retired_keys(settings))
    return Envelope(keks, db)


def secret_box(settings: Settings) -> SecretBox:
    return SecretBox(server_key(settings), retired_keys(settings))


def _hex_key(text: str, name: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise RuntimeError(f"{name} must be 64 hexadecimal characters (a 32-byte key).")
    return key


def build_services(settings: Settings, url: str) -> Services:
    engine = create_engine(
        url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        statement_timeout_ms=settings.database_statement_timeout_ms,
        pool_timeout_seconds=settings.database_pool_timeout_seconds,
        connect_timeout_seconds=settings.database_connect_timeout_seconds,
        command_timeout_seconds=settings.database_command_timeout_seconds,
    )
    statements = create_statement_pool(
        url,
        size=settings.database_pool_size,
        statement_timeout_ms=settings.database_statement_timeout_ms,
        pool_timeout_seconds=settings.database_pool_timeout_seconds,
        connect_timeout_seconds=settings.database_connect_timeout_seconds,
        command_timeout_seconds=settings.database_command_timeout_seconds,
    )
    db = Database(engine, statements)
    redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
    cache = build_store(redis_url)
    return Services(
        settings=settings,
        db=db,
        objects=object_store(settings),
        cache=cache,
        envelope=envelope(settings, db),
        search=build_search(settings, db),
        analyzers=Analyzers(settings),
        passwords=Passwords(
            time_cost=settings.password_hash_time_cost,
            memory_kib=settings.password_hash_memory_kib,
            parallelism=settings.password_hash_parallelism,
        ),
        access_tokens=access_tokens(settings),
        secrets=secret_box(settings),
        operations=OperationRegistry(db, cache, apq_ttl_seconds=settings.apq_ttl_seconds),
        # Links are signed with a key derived from the JWT key (kept as secret as it).
        export_links=ExportLinks(jwt_key(settings)),
        mail=Mailer(settings),
    )


async def ensure_audit_partitions(services: Services) -> None:
    async with services.db.transaction(None) as session:
        await ensure_partitions(session, months_ahead=AUDIT_MONTHS_AHEAD)


class BackgroundWorker:
    """A job worker inside another process (`prism serve --with-worker`)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(worker.run(self._stop))

    async def stop(self) -> None:
        self._stop.set()
        await self._task


async def start_worker(services: Services) -> BackgroundWorker:
    return BackgroundWorker(Worker(services))
