"""Recovery from what operations throw at a running Prism: a PostgreSQL restart under the
LISTEN connections (on a PostgreSQL of the test's own, restarted for real), SIGTERM to
`prism serve` and `prism worker` (a clean drain is exit 0), and the command line's expected
failures (one line, non-zero exit, no traceback)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import sqlalchemy as sa
import sqlalchemy.exc
from sqlalchemy.engine import make_url

from prism import bootstrap
from prism.audit import OPERATOR
from prism.config import Settings
from prism.db import embedded, migrations
from prism.db.engine import APP_ROLE, url_for_asyncpg
from prism.db.faults import DatabaseUnavailable
from prism.db.notify import RESYNC, Notifications
from prism.documents import processing
from prism.execution.ids import expect_id, to_global_id
from prism.identity import organizations as identity_organizations
from prism.jobs import handlers as job_handlers
from prism.jobs import worker as worker_module
from prism.jobs.handlers import JobRun
from prism.jobs.worker import Worker
from prism.models.enums import Role
from prism.models.jobs import enqueue_job
from prism.services import Services
from tests.factories import Tenant, add_document
from tests.pipeline_helpers import upload
from tests.test_pipeline import CONTRACT_TXT

PRISM = [sys.executable, "-m", "prism.cli"]


@dataclass
class OwnPostgres:
    """A PostgreSQL server of this test alone (pgserver's binaries, its own data directory),
    so restarting it disturbs nobody else."""

    pgdata: Path
    url: str

    @property
    def asyncpg_url(self) -> str:
        return url_for_asyncpg(self.url)

    async def restart(self) -> None:
        """``pg_ctl restart -m fast``: every connection is cut, the server comes back."""
        from pgserver import _commands  # type: ignore[import-untyped]

        user = "pgserver" if os.geteuid() == 0 else None
        # From the data directory: the server's user may not enter the tests' directory.
        await asyncio.to_thread(
            _commands.pg_ctl,
            ["-w", "-m", "fast", "-l", str(self.pgdata / "log"), "restart"],
            pgdata=self.pgdata,
            user=user,
            cwd=self.pgdata,
        )

    async def stop(self) -> None:
        from pgserver import _commands

        user = "pgserver" if os.geteuid() == 0 else None
        await asyncio.to_thread(
            _commands.pg_ctl,
            ["-w", "-m", "immediate", "stop"],
            pgdata=self.pgdata,
            user=user,
            cwd=self.pgdata,
        )

    async def notify(self, channel: str, payload: str) -> bool:
        """NOTIFY from a connection of its own; False while the server does not answer."""
        try:
            conn = await asyncpg.connect(self.asyncpg_url, timeout=2)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        try:
            await conn.execute("SELECT pg_notify($1, $2)", channel, payload)
        finally:
            await conn.close()
        return True


@pytest.fixture
async def own_postgres() -> AsyncIterator[OwnPostgres]:
    pytest.importorskip("pgserver")
    # Not under pytest's tmp_path: other pytest sessions make /tmp/pytest-of-<user> private
    # again, which locks out the server's own user (pgserver runs it as `pgserver` as root).
    pgdata = Path(tempfile.mkdtemp(prefix="prism-own-pg-"))
    url = await asyncio.to_thread(embedded.start, pgdata)
    await embedded.ensure_database(url)
    conn = await asyncpg.connect(url_for_asyncpg(url))
    try:
        await conn.execute(f"CREATE ROLE {APP_ROLE}")
    finally:
        await conn.close()
    server = OwnPostgres(pgdata=(pgdata / "pg").resolve(), url=url)
    try:
        yield server
    finally:
        await server.stop()
        shutil.rmtree(pgdata, ignore_errors=True)


async def _received(
    queue: asyncio.Queue[dict[str, Any]], seconds: float, *, resync: bool = False
) -> dict[str, Any] | None:
    """The next notification within ``seconds`` (RESYNC, the "look again" after a reconnect,
    skipped unless ``resync``)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            event = await asyncio.wait_for(queue.get(), timeout=left)
        except TimeoutError:
            return None
        if resync or event != RESYNC:
            return event
    return None


async def test_progress_notifications_are_received_after_a_postgresql_restart(
    own_postgres: OwnPostgres,
) -> None:
    channel = f"prism_test_{uuid.uuid4().hex[:8]}"
    notifications = Notifications(own_postgres.asyncpg_url, channel, key_field="d")
    await notifications.start()
    try:
        async with notifications.subscribe("doc") as queue:
            assert await own_postgres.notify(channel, orjson.dumps({"d": "doc", "n": 1}).decode())
            assert await _received(queue, 5) == {"d": "doc", "n": 1}
            # when PostgreSQL restarts under the LISTEN connection
            await own_postgres.restart()
            # then a NOTIFY sent after the restart still reaches the subscriber: the
            # listener reconnected by itself (within its backoff)
            got = None
            deadline = time.monotonic() + 30
            while got is None and time.monotonic() < deadline:
                sent = await own_postgres.notify(
                    channel, orjson.dumps({"d": "doc", "n": 2}).decode()
                )
                got = await _received(queue, 0.5) if sent else None
                if not sent:
                    await asyncio.sleep(0.2)
            assert got == {"d": "doc", "n": 2}
            assert notifications.listener.connects == 2
    finally:
        await notifications.stop()


async def test_subscribers_are_told_to_look_again_after_the_listen_connection_is_back(
    own_postgres: OwnPostgres,
) -> None:
    channel = f"prism_test_{uuid.uuid4().hex[:8]}"
    notifications = Notifications(own_postgres.asyncpg_url, channel, key_field="d")
    await notifications.start()
    try:
        async with (
            notifications.subscribe("doc") as queue,
            notifications.subscribe("other") as other,
        ):
            # when PostgreSQL restarts under the LISTEN connection (what is notified until
            # the listener is back, within its backoff, is lost: nobody listens)
            await own_postgres.restart()
            # then once the listener is back every subscriber is told to look again: the
            # source says where things are
            started = time.monotonic()
            assert await _received(queue, 30, resync=True) == RESYNC
            assert await _received(other, 1, resync=True) == RESYNC
            assert time.monotonic() - started < 30
            assert notifications.listener.connects == 2
            # and a NOTIFY pretending to be that message is not one
            assert await own_postgres.notify(channel, orjson.dumps(RESYNC).decode())
            assert await own_postgres.notify(channel, orjson.dumps({"d": "doc", "n": 2}).decode())
            assert await _received(queue, 5, resync=True) == {"d": "doc", "n": 2}
    finally:
        await notifications.stop()


class FreezingRelay:
    """TCP in front of the server's Unix socket. ``freeze`` silences the connections open
    now without closing them (a network cut or a failover behind a proxy: no error, no
    end-of-file, just nothing); new connections pass."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.port = 0
        self._server: asyncio.Server | None = None
        self._frozen: list[asyncio.Event] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for writer in self._writers:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def freeze(self) -> None:
        for frozen in self._frozen:
            frozen.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        up_reader, up_writer = await asyncio.open_unix_connection(self.socket_path)
        self._writers.append(up_writer)
        frozen = asyncio.Event()
        self._frozen.append(frozen)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while chunk := await src.read(65536):
                    if frozen.is_set():
                        await asyncio.Event().wait()  # swallowed, forever
                    dst.write(chunk)
                    await dst.drain()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            writer.close()
            up_writer.close()
            self._tasks.discard(task)


async def test_a_listen_connection_that_dies_silently_is_replaced(
    own_postgres: OwnPostgres,
) -> None:
    parsed = make_url(own_postgres.url)
    relay = FreezingRelay(f"{parsed.query['host']}/.s.PGSQL.{parsed.port or 5432}")
    await relay.start()
    through_relay = f"postgresql://postgres@127.0.0.1:{relay.port}/{parsed.database}"
    channel = f"prism_test_{uuid.uuid4().hex[:8]}"
    notifications = Notifications(through_relay, channel, key_field="d", keepalive_seconds=1)
    await notifications.start()
    try:
        async with notifications.subscribe("doc") as queue:
            assert await own_postgres.notify(channel, orjson.dumps({"d": "doc", "n": 1}).decode())
            assert await _received(queue, 5) == {"d": "doc", "n": 1}
            # when the connection goes silent (no error, no close)
            relay.freeze()
            # then the keepalive notices and a new connection takes over: a NOTIFY sent
            # after that is received
            got = None
            deadline = time.monotonic() + 20
            n = 1
            while got is None and time.monotonic() < deadline:
                n += 1
                assert await own_postgres.notify(
                    channel, orjson.dumps({"d": "doc", "n": n}).decode()
                )
                got = await _received(queue, 0.5)
            assert got is not None
            assert got["n"] > 2  # the first ones went into the silent connection
    finally:
        await notifications.stop()
        await relay.stop()


async def test_the_worker_is_woken_by_notify_after_a_postgresql_restart(
    own_postgres: OwnPostgres, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    await asyncio.to_thread(migrations.upgrade, own_postgres.url)
    # Polling so rare that only a NOTIFY can wake the worker within the test.
    monkeypatch.setattr(worker_module, "IDLE_POLL_SECONDS", 300.0)
    services = bootstrap.build_services(settings, own_postgres.url)
    organization = await identity_organizations.create_organization(
        services, OPERATOR, f"Restart {uuid.uuid4().hex[:6]}"
    )
    ran: asyncio.Queue[str] = asyncio.Queue()

    async def ping(run: JobRun) -> None:
        await ran.put(str(run.job.payload["n"]))

    async def enqueue(n: int) -> None:
        for _ in range(3):
            try:
                async with services.db.transaction(organization.id) as session:
                    await enqueue_job(
                        session, organization_id=organization.id, kind="test.ping", payload={"n": n}
                    )
                return
            except sqlalchemy.exc.DBAPIError as exc:
                # The pool's connections from before the restart fail once (and are dropped).
                if not exc.connection_invalidated:
                    raise
        raise AssertionError("could not enqueue")

    stop = asyncio.Event()
    worker = Worker(services, concurrency=1, handlers={"test.ping": ping})
    running = asyncio.create_task(worker.run(stop, grace_seconds=5))
    try:
        await enqueue(1)
        assert await asyncio.wait_for(ran.get(), timeout=10) == "1"
        # when PostgreSQL restarts under the idle worker
        await own_postgres.restart()
        await asyncio.sleep(3)  # the worker settles (reconnected, or not) and sleeps again
        # then a job queued after the restart wakes it through LISTEN, long before a poll
        await enqueue(2)
        assert await asyncio.wait_for(ran.get(), timeout=10) == "2"
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=30)
        await services.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
    # PYTHONWARNINGS: libraries' own warnings (platformdirs on this machine) are not the
    # command's output.
    return {
        **env,
        "PYTHONWARNINGS": "ignore",
        "PRISM_LOG_LEVEL": "WARNING",
        "PRISM_JWT_SECRET": "j" * 40,
        **extra,
    }


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # a file, not a pipe: a full pipe would stall the process
        return subprocess.Popen([*PRISM, *args], env=env, stdout=out, stderr=out)


async def test_sigterm_drains_serve_and_worker_and_they_exit_0(
    database_url: str, settings: Settings, tmp_path: Path
) -> None:
    port = _free_port()
    env = _env(
        PRISM_DATABASE_URL=database_url,
        PRISM_DATA_DIR=str(settings.data_dir),
        PRISM_PORT=str(port),
    )
    processes = {
        name: _start(args, env, tmp_path / f"{name}.log")
        for name, args in (("serve", ["serve", "--with-worker"]), ("worker", ["worker"]))
    }
    try:
        deadline = time.monotonic() + 90
        ready = False
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            while not ready and time.monotonic() < deadline:
                assert processes["serve"].poll() is None, (tmp_path / "serve.log").read_text()
                try:
                    ready = (await client.get("/readyz", timeout=1)).status_code == 200
                except httpx.TransportError:
                    await asyncio.sleep(0.3)
        assert ready
        assert processes["worker"].poll() is None, (tmp_path / "worker.log").read_text()
        # when the platform stops them
        for process in processes.values():
            process.send_signal(signal.SIGTERM)
        # then both drain and exit 0 (not 143: the signal is not raised again after the drain)
        for name, process in processes.items():
            code = await asyncio.to_thread(process.wait, 40)
            assert code == 0, (name, code, (tmp_path / f"{name}.log").read_text()[-2000:])
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def _prism(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PRISM, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _one_line_failure(done: subprocess.CompletedProcess[str]) -> str:
    """An expected failure: exit 1, nothing on stdout, and one `error:` line on stderr."""
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), lines
    return lines[0]


def test_expected_failures_of_commands_are_one_line(
    database_url: str, settings: Settings, tmp_path: Path
) -> None:
    env = _env(PRISM_DATABASE_URL=database_url, PRISM_DATA_DIR=str(tmp_path / "var"))
    # a backup whose dump file is gone (the default destination: PRISM_DATA_DIR/backups)
    made = _prism("backup", "create", env=env)
    assert made.returncode == 0, made.stderr
    name = made.stdout.strip().splitlines()[-1]
    (tmp_path / "var" / "backups" / name / "prism.dump.sealed").unlink()
    said = _one_line_failure(_prism("backup", "verify", "--name", name, env=env))
    assert "prism.dump" in said or "dump" in said
    # a backup that does not exist
    said = _one_line_failure(_prism("backup", "verify", "--name", "no-such-backup", env=env))
    assert "manifest" in said
    # an output file that cannot be written
    said = _one_line_failure(
        _prism("schema", "export", "--output", str(tmp_path / "missing" / "s.graphql"), env=env)
    )
    assert "No such file or directory" in said
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    said = _one_line_failure(
        _prism("policy", "table", "--output", str(a_file / "policy.md"), env=env)
    )
    assert "Not a directory" in said
    # bad arguments are click's usage error (exit 2), no traceback either
    usage = _prism("policy", "table", "--output", str(tmp_path), env=env)  # a directory
    assert usage.returncode == 2
    assert "Traceback" not in usage.stderr
    assert "is a directory" in usage.stderr
    # an operations file that cannot be read
    unreadable = tmp_path / "ops.graphql"
    unreadable.write_bytes(b"\xff\xfe not text")
    said = _one_line_failure(_prism("operations", "push", str(unreadable), env=env))
    assert str(unreadable) in said
    assert "UTF-8" in said
    # the database unreachable, for every kind of command that needs it
    closed = f"postgresql://prism@127.0.0.1:{_free_port()}/prism"
    down = _env(PRISM_DATABASE_URL=closed, PRISM_DATA_DIR=str(tmp_path / "var"))
    for args in (
        ["migrate"],
        ["org", "create", "Nobody"],
        ["backup", "verify"],
        ["worker", "--drain"],
        ["serve"],
    ):
        said = _one_line_failure(_prism(*args, env=down))
        assert "connect" in said, (args, said)
    # a setting that is refused
    said = _one_line_failure(_prism("migrate", env={**env, "PRISM_PORT": "not-a-port"}))
    assert "PRISM_PORT" in said
    # an unknown organization (a domain error) is one line too
    said = _one_line_failure(_prism("search", "reindex", "--org", "no such org", env=env))


async def _jobs_and_document(
    services: Services, organization_id: uuid.UUID, job_id: str
) -> tuple[Any, Any]:
    async with services.db.transaction(organization_id) as session:
        job = (
            await session.execute(
                sa.text(
                    "SELECT state, attempts, max_attempts, last_error FROM jobs WHERE id = :id"
                ),
                {"id": expect_id(job_id, "Job")},
            )
        ).one()
        document = (
            await session.execute(
                sa.text("SELECT processing_status FROM documents WHERE organization_id = :o"),
                {"o": organization_id},
            )
        ).one()
    return job, document


async def _make_runnable(
    services: Services, organization_id: uuid.UUID, *, age_hours: float = 0
) -> None:
    async with services.db.transaction(organization_id) as session:
        await session.execute(
            sa.text(
                "UPDATE jobs SET run_at = now(), "
                "created_at = now() - make_interval(secs => :age) "
                "WHERE state = 'FAILED' AND organization_id = :o"
            ),
            {"o": organization_id, "age": age_hours * 3600},
        )


async def test_an_outage_does_not_spend_a_jobs_attempts(
    services: Services, tenant: Tenant, client: httpx.AsyncClient
) -> None:
    data = CONTRACT_TXT + os.urandom(6).hex().encode()
    answer = await upload(
        client, tenant.tokens[Role.ADMIN], "outage.txt", data, content_type="text/plain"
    )
    job_id = answer.json()["data"]["uploadDocument"]["job"]["id"]
    outages = 0

    async def extract_after_an_outage(run: JobRun) -> None:
        # the database (or the object store, OpenSearch) away for more runs than the job
        # has attempts, then back
        nonlocal outages
        if outages < 7:
            outages += 1
            raise DatabaseUnavailable("database unavailable (ConnectionResetError)")
        await job_handlers.HANDLERS[processing.EXTRACT](run)

    handlers = {**worker_module.HANDLERS, processing.EXTRACT: extract_after_an_outage}
    worker = Worker(services, concurrency=1, handlers=handlers)
    for _ in range(7):
        await worker.drain()
        job, _document = await _jobs_and_document(services, tenant.org_id, job_id)
        # postponed, not failed: no attempt spent, runnable again later (with backoff)
        assert (job.state, job.attempts) == ("FAILED", 0), job
        assert "DatabaseUnavailable" in job.last_error
        await _make_runnable(services, tenant.org_id)
    await worker.drain()
    job, document = await _jobs_and_document(services, tenant.org_id, job_id)
    assert outages == 7
    assert (job.state, job.attempts) == ("SUCCEEDED", 1)
    assert document.processing_status == "COMPLETED"


async def test_an_outage_spends_attempts_once_the_job_is_old(
    services: Services, tenant: Tenant, client: httpx.AsyncClient
) -> None:
    """The bound: a dependency gone for good still ends the job DEAD and its document
    FAILED, once the job is older than OUTAGE_RETRY_HOURS."""
    data = CONTRACT_TXT + os.urandom(6).hex().encode()
    answer = await upload(
        client, tenant.tokens[Role.ADMIN], "gone.txt", data, content_type="text/plain"
    )
    job_id = answer.json()["data"]["uploadDocument"]["job"]["id"]

    async def away(run: JobRun) -> None:
        raise DatabaseUnavailable("database unavailable (ConnectionRefusedError)")

    handlers = {**worker_module.HANDLERS, processing.EXTRACT: away}
    worker = Worker(services, concurrency=1, handlers=handlers)
    await worker.drain()
    await _make_runnable(services, tenant.org_id, age_hours=worker_module.OUTAGE_RETRY_HOURS + 1)
    for _ in range(10):
        await worker.drain()
        await _make_runnable(
            services, tenant.org_id, age_hours=worker_module.OUTAGE_RETRY_HOURS + 1
        )
    job, document = await _jobs_and_document(services, tenant.org_id, job_id)
    assert (job.state, job.attempts) == ("DEAD", job.max_attempts)
    assert document.processing_status == "FAILED"


async def test_a_progress_stream_reads_its_document_again_when_no_event_comes(
    settings: Settings,
    database_url: str,
    services: Services,
    tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A notification lost without anyone noticing (no reconnect to say so): the stream
    reads its document again after RESYNC_SECONDS without an event, and ends."""
    from prism.schema import subscription
    from tests.test_websocket_auth import PROGRESS, _being_analyzed, connect, serving

    monkeypatch.setattr(subscription, "RESYNC_SECONDS", 0.5, raising=False)
    document = await add_document(services, tenant)
    await _being_analyzed(services, tenant, document)
    quiet = settings.model_copy(update={"websocket_recheck_seconds": 300})
    async with (
        serving(quiet, database_url) as address,
        connect(address, tenant.tokens[Role.ADMIN]) as ws,
    ):
        watching = await ws.start(PROGRESS, {"id": to_global_id("Document", document.id)})
        first = await ws.message(watching)
        assert first["payload"]["data"]["documentProgress"]["processingStatus"] == "ANALYZING"
        # the document completes and its NOTIFY is lost (none is sent)
        async with services.db.transaction(tenant.org_id) as session:
            await session.execute(
                sa.text(
                    "UPDATE documents SET processing_status = 'COMPLETED', total_sections = 0 "
                    "WHERE id = :id"
                ),
                {"id": document.id},
            )
        started = time.monotonic()
        last = await ws.message(watching)
        while last["payload"]["data"]["documentProgress"]["processingStatus"] != "COMPLETED":
            last = await ws.message(watching)  # a re-read before the update landed
        assert (await ws.message(watching))["type"] == "complete"
        assert time.monotonic() - started < 5
