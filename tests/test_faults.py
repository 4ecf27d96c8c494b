"""PostgreSQL down, restarting and frozen under traffic, against Prism serving real HTTP.

The database here is a PostgreSQL server of this module's own (the shared test server is
never touched): it is stopped (fast shutdown) and started again, and frozen (SIGSTOP of every
postgres process) and thawed, while a few clients read and write through uvicorn. Every
answer must be data or a coded error (503 SERVICE_UNAVAILABLE with Retry-After while the
database is away, OUTCOME_UNKNOWN for a commit caught by the outage), within the request
deadline; nothing acknowledged may be lost; keep-alive connections survive the errors; the
log says each failure in one line without a stack; and Prism recovers without a restart."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import psutil
import pytest
import sqlalchemy as sa
import websockets
from pydantic import SecretStr
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from prism import audit, bootstrap
from prism.config import Settings
from prism.crypto.links import ExportLinks
from prism.db import embedded, migrations
from prism.db import engine as db_module
from prism.db.engine import create_engine, url_for_asyncpg
from prism.db.faults import DatabaseUnavailable, unavailable
from prism.execution.ids import to_global_id
from prism.models.audit import Actor, verify_chain
from prism.models.enums import Role
from prism.models.users import User
from prism.services import Services
from tests.conftest import client_of
from tests.factories import PASSWORD, Tenant, codes, gql, make_tenant
from tests.pipeline_helpers import run_jobs, upload
from tests.test_pipeline import CONTRACT_TXT

pgserver = pytest.importorskip("pgserver")
from pgserver import _commands as pg_commands  # noqa: E402

# The request deadline of the app under test, and what a client may wait beyond it (the
# answer's trip, a loaded two-core machine).
DEADLINE = 4.0
SLACK = 2.5
READY_DEADLINE = 2.0


class OwnPostgres:
    """A PostgreSQL server (pgserver's binaries) that this module may stop, start, freeze."""

    def __init__(self, pgdata: Path) -> None:
        self.server = pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
        info = self.server.get_postmaster_info()
        self.pgdata = pgdata
        self.socket_dir = info.socket_dir
        self.user = self.server.system_user
        self.frozen: list[psutil.Process] = []

    def uri(self, database: str) -> str:
        return str(self.server.get_uri(database))

    def _ctl(self, *args: str) -> None:
        pg_commands.pg_ctl(list(args), pgdata=self.pgdata, user=self.user, timeout=30)

    def stop(self) -> None:
        """Fast shutdown: sessions are cut, in-flight transactions roll back."""
        self._ctl("-w", "-m", "fast", "stop")

    def start(self) -> None:
        self._ctl(
            "-w",
            "-o",
            '-h ""',
            "-o",
            f"-k {self.socket_dir}",
            "-l",
            str(self.pgdata / "log"),
            "start",
        )

    def _processes(self) -> list[psutil.Process]:
        pid = int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])
        postmaster = psutil.Process(pid)
        return [postmaster, *postmaster.children(recursive=True)]

    def freeze(self) -> None:
        self.frozen = self._processes()
        for process in self.frozen:
            os.kill(process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for process in self.frozen:
            os.kill(process.pid, signal.SIGCONT)
        self.frozen = []

    def close(self) -> None:
        if self.frozen:
            self.thaw()
        if (self.pgdata / "postmaster.pid").exists():
            self._ctl("-w", "-m", "immediate", "stop")


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[OwnPostgres]:
    if os.environ.get("PRISM_TEST_DATABASE_URL"):
        pytest.skip("the fault tests need a PostgreSQL of their own (pgserver)")
    # Not under pytest's basetemp: other pytest sessions of the machine prune old ones.
    directory = Path(tempfile.mkdtemp(prefix="prism-faults-"))
    server = OwnPostgres(directory / "pg")
    try:
        yield server
    finally:
        server.close()
        shutil.rmtree(directory, ignore_errors=True)


class ServedApp:
    """Prism served by uvicorn in a process of its own (as `prism serve` runs it): real
    sockets, real keep-alive, its log in a file."""

    def __init__(self, settings: Settings, *, with_worker: bool = False) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.directory = Path(tempfile.mkdtemp(prefix="prism-served-"))
        self.log_path = self.directory / "stderr.log"
        self.env = {**os.environ, **_environment(settings)}
        if with_worker:
            self.env[bootstrap.WITH_WORKER_ENV] = "1"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def logs(self) -> str:
        return self.log_path.read_text()

    def __enter__(self) -> ServedApp:
        command = [
            *(sys.executable, "-m", "uvicorn", "--factory", "prism.web.app:app_from_environment"),
            *("--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"),
            *("--timeout-keep-alive", "60"),
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, env=self.env, cwd=self.directory, stderr=log, stdout=log
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"uvicorn exited: {self.logs[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("uvicorn did not start")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _environment(settings: Settings) -> dict[str, str]:
    """The settings as the PRISM_* variables a server process reads."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, Enum):
            value = value.value
        env[f"PRISM_{name.upper()}"] = str(value)
    return env


@dataclass
class Answer:
    worker: str
    operation: str
    started: float
    elapsed: float
    status: int | None
    codes: list[str]
    retry_after: str | None
    created: str | None = None
    problem: str | None = None


@dataclass
class Traffic:
    url: str
    tenant: Tenant
    answers: list[Answer] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    # TCP connections each client opened (a server that closes after errors makes many).
    connections: dict[str, int] = field(default_factory=dict)

    def _trace(self, worker: str) -> Any:
        async def trace(event: str, info: dict[str, Any]) -> None:
            if event == "connection.connect_tcp.complete":
                self.connections[worker] = self.connections.get(worker, 0) + 1

        return trace

    async def _send(
        self, http: httpx.AsyncClient, worker: str, operation: str, **request: Any
    ) -> Answer:
        started = time.monotonic()
        try:
            response = await http.request(**request, extensions={"trace": self._trace(worker)})
        except httpx.HTTPError as exc:
            answer = Answer(worker, operation, started, time.monotonic() - started, None, [], None)
            answer.problem = f"transport: {type(exc).__name__}"
            self.answers.append(answer)
            return answer
        elapsed = time.monotonic() - started
        body: dict[str, Any] = {}
        if response.headers.get("content-type", "").startswith("application/json"):
            body = orjson.loads(response.content)
        errors = body.get("errors") or []
        answer = Answer(
            worker,
            operation,
            started,
            elapsed,
            response.status_code,
            [(e.get("extensions") or {}).get("code") for e in errors],
            response.headers.get("retry-after"),
        )
        if response.status_code == 200 and not errors:
            data = body.get("data") or {}
            created = (data.get("createApiToken") or {}).get("apiToken") or {}
            answer.created = created.get("name")
        self.answers.append(answer)
        return answer

    async def reader(self, name: str, token: str) -> None:
        query = "{ documents(first: 3) { totalCount } }"
        async with self._client() as http:
            while not self.stop.is_set():
                await self._send(
                    http,
                    name,
                    "read",
                    method="POST",
                    url="/graphql",
                    json={"query": query},
                    headers={"authorization": f"Bearer {token}"},
                )
                await asyncio.sleep(0.02)

    async def writer(self, name: str, token: str) -> None:
        mutation = """mutation($name: String!) {
          createApiToken(input: {name: $name, scopes: ["documents:read"]}) { apiToken { name } }
        }"""
        async with self._client() as http:
            while not self.stop.is_set():
                await self._send(
                    http,
                    name,
                    "write",
                    method="POST",
                    url="/graphql",
                    json={"query": mutation, "variables": {"name": f"f-{uuid.uuid4().hex[:12]}"}},
                    headers={"authorization": f"Bearer {token}"},
                )
                await asyncio.sleep(0.02)

    async def signer(self, name: str) -> None:
        """Signs in (anonymous: no database before GraphQL), reads with the new access token
        (a JWT: its session is looked up before GraphQL), and asks /readyz."""
        login = """mutation($email: String!, $password: String!) {
          login(input: {email: $email, password: $password}) { accessToken }
        }"""
        email = self.tenant.email(Role.ADMIN)
        async with self._client() as http:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    response = await http.post(
                        "/graphql",
                        json={"query": login, "variables": {"email": email, "password": PASSWORD}},
                        extensions={"trace": self._trace(name)},
                    )
                    self._record_plain(name, "login", started, response)
                    if response.status_code == 200 and "errors" not in response.json():
                        token = response.json()["data"]["login"]["accessToken"]
                        await self._send(
                            http,
                            name,
                            "jwt-read",
                            method="GET",
                            url="/graphql",
                            params={"query": "{ documents(first: 1) { totalCount } }"},
                            headers={"authorization": f"Bearer {token}"},
                        )
                except httpx.HTTPError as exc:
                    answer = Answer(
                        name, "login", started, time.monotonic() - started, None, [], None
                    )
                    answer.problem = f"transport: {type(exc).__name__}"
                    self.answers.append(answer)
                await self._send(http, name, "readyz", method="GET", url="/readyz")
                await asyncio.sleep(0.2)

    def _record_plain(
        self, worker: str, operation: str, started: float, response: httpx.Response
    ) -> None:
        errors = response.json().get("errors") or []
        self.answers.append(
            Answer(
                worker,
                operation,
                started,
                time.monotonic() - started,
                response.status_code,
                [(e.get("extensions") or {}).get("code") for e in errors],
                response.headers.get("retry-after"),
            )
        )

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url,
            timeout=DEADLINE + SLACK + 5,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )


def _settings(url: str, data_dir: Path) -> Settings:
    return Settings(
        _env_file=None,
        database_url=SecretStr(url),
        data_dir=data_dir,
        jwt_secret=SecretStr("fault-secret-" + "x" * 40),
        password_hash_time_cost=1,
        password_hash_memory_kib=1024,
        password_hash_parallelism=1,
        log_json=True,
        log_level="INFO",
        lifecycle_interval_hours=0,
        database_pool_size=4,
        database_max_overflow=2,
        database_pool_timeout_seconds=1,
        database_connect_timeout_seconds=1,
        database_command_timeout_seconds=2,
        request_timeout_seconds=DEADLINE,
    )


@pytest.fixture(scope="module")
async def faults_setup(
    own_postgres: OwnPostgres,
) -> tuple[Settings, str, Tenant]:
    url = own_postgres.uri("prism_faults")
    await embedded.ensure_database(url)
    await asyncio.to_thread(migrations.upgrade, url)
    settings = _settings(url, own_postgres.pgdata.parent / "data")
    services = bootstrap.build_services(settings, url)
    try:
        tenant = await make_tenant(services)
    finally:
        await services.close()
    return settings, url, tenant


async def _websockets_while_down(base_url: str, token: str) -> dict[str, Any]:
    url = base_url.replace("http://", "ws://") + "/graphql"
    seen: dict[str, Any] = {}
    try:
        async with websockets.connect(
            url,
            subprotocols=[Subprotocol("graphql-transport-ws")],
            additional_headers={"authorization": f"Bearer {token}"},
        ):
            seen["header"] = "accepted"
    except InvalidStatus as exc:
        seen["header"] = (exc.response.status_code, exc.response.headers.get("retry-after"))
    async with websockets.connect(url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
        await ws.send(
            orjson.dumps(
                {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
            ).decode()
        )
        try:
            await asyncio.wait_for(ws.recv(), timeout=DEADLINE + SLACK)
            seen["connection_init"] = "acknowledged"
        except ConnectionClosed as exc:
            seen["connection_init"] = exc.rcvd.code if exc.rcvd else None
    return seen


async def _wait_ready(http: httpx.AsyncClient, within: float) -> float:
    """Seconds until /readyz says the database is back (fails after ``within``)."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        try:
            if (await http.get("/readyz")).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"/readyz did not recover within {within} s")


async def test_outages_answer_coded_errors_in_bounded_time_and_lose_nothing(
    own_postgres: OwnPostgres,
    faults_setup: tuple[Settings, str, Tenant],
) -> None:
    settings, url, tenant = faults_setup
    phases: dict[str, tuple[float, float]] = {}
    probes: list[tuple[str, int, float, str | None]] = []
    # With a job worker in the process: its loops meet the outage too.
    with ServedApp(settings, with_worker=True) as served:
        traffic = Traffic(served.url, tenant)
        pat = tenant.tokens[Role.ADMIN]
        workers = [
            asyncio.create_task(traffic.reader("reader", pat)),
            asyncio.create_task(traffic.writer("writer-1", pat)),
            asyncio.create_task(traffic.writer("writer-2", pat)),
            asyncio.create_task(traffic.signer("signer")),
        ]
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as probe:

            async def readyz(label: str) -> None:
                started = time.monotonic()
                response = await probe.get("/readyz")
                probes.append(
                    (
                        label,
                        response.status_code,
                        time.monotonic() - started,
                        response.headers.get("retry-after"),
                    )
                )

            try:
                await asyncio.sleep(2)
                # Down: a fast shutdown under traffic, then a cold start.
                began = time.monotonic()
                await asyncio.to_thread(own_postgres.stop)
                await asyncio.sleep(0.5)
                await readyz("down")
                sockets = await _websockets_while_down(served.url, pat)
                # A signed download link: the signature is checked, then the database asked.
                link = ExportLinks(bootstrap.jwt_key(settings)).path(
                    tenant.org_id, uuid.uuid4(), datetime.now(UTC) + timedelta(hours=1)
                )
                download = await probe.get(link)
                await asyncio.sleep(2)
                await asyncio.to_thread(own_postgres.start)
                phases["down"] = (began, time.monotonic())
                await _wait_ready(probe, 15)
                phases["recovered-1"] = (time.monotonic(), time.monotonic() + 2)
                await asyncio.sleep(2)
                # Frozen: every postgres process stopped, sockets open, nothing answers.
                began = time.monotonic()
                own_postgres.freeze()
                await asyncio.sleep(0.5)
                await readyz("frozen")
                await asyncio.sleep(DEADLINE + 1)
                own_postgres.thaw()
                phases["frozen"] = (began, time.monotonic())
                await _wait_ready(probe, 15)
                recovered = time.monotonic()
                await asyncio.sleep(3)
                phases["recovered-2"] = (recovered, time.monotonic())
            finally:
                if own_postgres.frozen:
                    own_postgres.thaw()
                traffic.stop.set()
                await asyncio.gather(*workers)
    logs = served.logs

    answers = traffic.answers
    # Every answer arrived, within the deadline (readyz within its own), with a code.
    problems = [a for a in answers if a.problem]
    assert not problems, problems[:5]
    late = [a for a in answers if a.elapsed > DEADLINE + SLACK]
    assert not late, [(a.operation, a.status, round(a.elapsed, 2)) for a in late[:5]]
    slow_readyz = [a for a in answers if a.operation == "readyz" and a.elapsed > 2 + SLACK]
    assert not slow_readyz
    outage_codes = {"SERVICE_UNAVAILABLE", "OUTCOME_UNKNOWN"}
    for answer in answers:
        if answer.operation == "readyz":
            assert answer.status in (200, 503), answer
            if answer.status == 503:
                assert answer.retry_after is not None
            continue
        if answer.status == 200:
            # Sign-in bookkeeping may still be throttled after attempts the outage cut short.
            assert set(answer.codes) <= {"RATE_LIMITED"}, answer
            continue
        assert answer.status == 503, answer
        assert answer.codes, answer
        assert set(answer.codes) <= outage_codes, answer
        assert answer.retry_after is not None, answer

    def within(phase: str, answer: Answer) -> bool:
        began, ended = phases[phase]
        return began <= answer.started + answer.elapsed and answer.started <= ended

    # The outages were felt (the test exercised them) and answered as such.
    for phase in ("down", "frozen"):
        unavailable = [a for a in answers if within(phase, a) and a.status == 503]
        assert len(unavailable) >= 3, (phase, len(unavailable))
    assert [p[:2] for p in probes] == [("down", 503), ("frozen", 503)]
    # WebSockets: a handshake authenticated by header is refused with 503 and Retry-After,
    # one authenticated in connection_init is closed with 1013 (try again later).
    assert sockets == {"header": (503, "2"), "connection_init": 1013}
    assert download.status_code == 503
    assert download.headers["retry-after"]
    assert download.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert all(elapsed <= READY_DEADLINE + SLACK and retry for _, _, elapsed, retry in probes)

    # Recovered without a restart: every kind of request succeeds again.
    after = [a for a in answers if within("recovered-2", a) and a.operation != "readyz"]
    for operation in ("read", "write", "login", "jwt-read"):
        done = [a for a in after if a.operation == operation]
        assert done, operation
        assert all(a.status == 200 and not a.codes for a in done[-2:]), done[-2:]

    # Errors did not close keep-alive connections: each client stayed on a few sockets.
    for worker in ("reader", "writer-1", "writer-2"):
        errors = sum(1 for a in answers if a.worker == worker and a.status != 200)
        assert errors > 0
        assert 1 <= traffic.connections.get(worker, 0) <= 3, (worker, traffic.connections, errors)

    # Nothing acknowledged was lost.
    acknowledged = {a.created for a in answers if a.created}
    assert acknowledged
    conn = await asyncpg.connect(url)
    try:
        stored = {
            row["name"]
            for row in await conn.fetch(
                "SELECT name FROM api_tokens WHERE name = ANY($1::text[])", list(acknowledged)
            )
        }
    finally:
        await conn.close()
    assert acknowledged <= stored, acknowledged - stored

    # One line per failure, and no stack for an outage.
    failures = sum(1 for a in answers if a.status != 200)
    lines = logs.splitlines()
    assert "Traceback" not in logs, next(line for line in lines if "Traceback" in line)[:2000]
    unavailable_lines = [line for line in lines if "unavailable" in line or "deadline" in line]
    assert len(unavailable_lines) <= 2 * failures
    print(
        f"answers={len(answers)} failures={failures} "
        f"503={sum(1 for a in answers if a.status == 503)} "
        f"outcome_unknown={sum(1 for a in answers if 'OUTCOME_UNKNOWN' in a.codes)} "
        f"acknowledged_writes={len(acknowledged)} log_bytes={len(logs)} "
        f"max_elapsed={max(a.elapsed for a in answers):.2f}s probes={probes} "
        f"connections={traffic.connections}"
    )


# --- a commit cut short ----------------------------------------------------------------------

# Deferred constraint triggers run at COMMIT: an API token named `slow-<seconds>-…`, or a
# sign-in session whose client sent `User-Agent: slow-<seconds>-…`, keeps its transaction's
# COMMIT busy that long, so that a test can cut the COMMIT short.
SLOW_COMMIT = """
CREATE OR REPLACE FUNCTION faults_slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    label text := coalesce(to_jsonb(NEW) ->> 'user_agent', to_jsonb(NEW) ->> 'name');
BEGIN
    IF label LIKE 'slow-%' THEN
        PERFORM pg_sleep(split_part(label, '-', 2)::float);
    END IF;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS faults_slow_commit ON api_tokens;
CREATE CONSTRAINT TRIGGER faults_slow_commit AFTER INSERT ON api_tokens
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION faults_slow_commit();
DROP TRIGGER IF EXISTS faults_slow_commit ON sessions;
CREATE CONSTRAINT TRIGGER faults_slow_commit AFTER INSERT ON sessions
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION faults_slow_commit();
"""
CREATE_TOKEN = """mutation($name: String!) {
  createApiToken(input: {name: $name, scopes: ["documents:read"]}) { apiToken { name } }
}"""
LOGIN = """mutation($email: String!, $password: String!) {
  login(input: {email: $email, password: $password}) { accessToken }
}"""


@pytest.mark.parametrize("cut", ["connection-lost", "deadline"])
@pytest.mark.parametrize(
    "mutation",
    [
        # A mutation of the request's transaction, and a sign-in's transaction of its own.
        "createApiToken",
        "login",
    ],
)
async def test_a_mutation_cut_short_at_commit_answers_outcome_unknown(
    own_postgres: OwnPostgres,
    faults_setup: tuple[Settings, str, Tenant],
    cut: str,
    mutation: str,
) -> None:
    """The COMMIT was sent and no answer came back: the change may or may not have been
    saved, and the client is told exactly that (not a success, not a plain error)."""
    settings, url, tenant = faults_setup
    if cut == "connection-lost":
        settings = settings.model_copy(
            update={"database_command_timeout_seconds": 30, "request_timeout_seconds": 30}
        )
    else:
        settings = settings.model_copy(
            update={"database_command_timeout_seconds": 0, "request_timeout_seconds": 2}
        )
    slow = f"slow-4-{uuid.uuid4().hex[:8]}"
    if mutation == "createApiToken":
        request: dict[str, Any] = {
            "json": {"query": CREATE_TOKEN, "variables": {"name": slow}},
            "headers": {"authorization": f"Bearer {tenant.tokens[Role.ADMIN]}"},
        }
    else:
        variables = {"email": tenant.email(Role.VIEWER), "password": PASSWORD}
        request = {
            "json": {"query": LOGIN, "variables": variables},
            "headers": {"user-agent": slow},
        }
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(SLOW_COMMIT)
        with ServedApp(settings) as served:
            async with httpx.AsyncClient(base_url=served.url, timeout=30) as http:
                sent = asyncio.create_task(http.post("/graphql", **request))
                if cut == "connection-lost":
                    # The server process of the request's connection ends mid-COMMIT.
                    deadline = time.monotonic() + 10
                    killed = 0
                    while not killed and time.monotonic() < deadline:
                        killed = await admin.fetchval(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE application_name = 'prism' AND state = 'active' "
                            "AND query ILIKE 'COMMIT%'"
                        )
                        await asyncio.sleep(0.05)
                    assert killed == 1
                started = time.monotonic()
                response = await sent
                elapsed = time.monotonic() - started
        body = response.json()
        assert response.status_code == 503
        assert response.headers["retry-after"]
        assert [e["extensions"]["code"] for e in body["errors"]] == ["OUTCOME_UNKNOWN"]
        assert body["data"] is None
        assert "Check before retrying" in body["errors"][0]["message"]
        # The answer did not wait for the COMMIT (4 s) to end.
        assert elapsed < 4
    finally:
        for table in ("api_tokens", "sessions"):
            await admin.execute(f"DROP TRIGGER IF EXISTS faults_slow_commit ON {table}")
        await admin.close()


# --- sign-in beside background writers -----------------------------------------------------


async def _blocked_on_a_lock(database_url: str, within: float = 5.0) -> bool:
    """Whether some transaction of the database waits on a row lock (polled, as the owner:
    the app's role does not see other sessions' waits)."""
    conn = await asyncpg.connect(url_for_asyncpg(database_url))
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            waiting = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()"
            )
            if waiting:
                return True
            await asyncio.sleep(0.05)
        return False
    finally:
        await conn.close()


async def test_audit_events_lock_the_organization_before_the_chain_head(
    services: Services, tenant: Tenant, database_url: str
) -> None:
    """The lock order every writer of an organization follows: its row (which every data
    change takes through the data-version triggers), then its audit chain head. A sign-in
    writes the user first and its event second; a worker recording `document.analyzed`
    recorded the event before its (unflushed) document change reached the database. In
    opposite orders, the two deadlocked and the sign-in answered CONFLICT."""
    admin = tenant.users[Role.ADMIN]
    reviewer = tenant.users[Role.REVIEWER]
    first_event = asyncio.Event()

    async def event_first() -> None:
        # Like the worker: a change pending in the session, then the event.
        async with services.db.transaction(tenant.org_id) as session:
            user = await session.get(User, reviewer.id)
            assert user is not None
            user.last_login_at = datetime.now(UTC)
            first_event.set()
            await audit.record(
                session,
                None,
                None,
                organization_id=tenant.org_id,
                event_type="test.event_first",
                category="processing",
                description="event recorded before its change is flushed",
            )

    async with services.db.transaction(tenant.org_id) as session:
        # Like a sign-in: the change first (the organization's row is now locked) ...
        await session.execute(
            sa.update(User).where(User.id == admin.id).values(last_login_at=datetime.now(UTC))
        )
        other = asyncio.create_task(event_first())
        await first_event.wait()
        assert await _blocked_on_a_lock(database_url)
        # ... then the event, while the other transaction waits.
        await audit.record(
            session,
            None,
            None,
            organization_id=tenant.org_id,
            actor=Actor(user_id=admin.id),
            event_type="test.change_first",
            category="authentication",
            description="event recorded after its change",
        )
    await other  # no deadlock: it waited for the organization's row and then went ahead
    async with services.db.transaction(tenant.org_id) as session:
        report = await verify_chain(session, organization_id=tenant.org_id)
    assert report.valid


async def test_sign_ins_never_conflict_with_the_worker_of_their_organization(
    app: Any, services: Services, tenant: Tenant
) -> None:
    """Many parallel sign-ins of one organization while its worker processes uploads: every
    sign-in succeeds (collisions of the server's own bookkeeping are the server's to retry;
    CONFLICT is for clients' changes)."""
    users = [tenant.users[role] for role in Role]
    async with client_of(app) as uploader:
        for i in range(6):
            body = CONTRACT_TXT + f"\n{uuid.uuid4()} {i}\n".encode() * (i + 1)
            response = await upload(
                uploader, tenant.tokens[Role.REVIEWER], f"c{i}.txt", body, content_type="text/plain"
            )
            assert response.status_code == 200, response.text
    worker = asyncio.create_task(run_jobs(services))
    outcomes: list[list[str]] = []

    async def sign_in(n: int) -> None:
        user = users[n % len(users)]
        async with client_of(app, ip=f"198.51.100.{n % 250 + 1}") as http:
            body = await gql(
                http,
                "mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) "
                "{ accessToken } }",
                {"e": user.email, "p": PASSWORD},
            )
        outcomes.append(codes(body))

    n = 0
    while not worker.done() or n < 40:
        await asyncio.gather(*(sign_in(n + k) for k in range(8)))
        n += 8
        if n >= 400:
            break
    processed = await worker
    assert processed >= 6
    assert len(outcomes) >= 40
    assert all(outcome == [] for outcome in outcomes), [o for o in outcomes if o][:5]


# --- which driver errors mean "the database is away" -----------------------------------------


async def _error_of(engine: Any, statement: str) -> BaseException:
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(statement))
    except Exception as exc:  # noqa: BLE001 - the error is what is examined
        return exc
    raise AssertionError(f"{statement!r} did not fail")


async def test_unavailable_means_the_database_is_away_not_that_the_request_is_wrong(
    database_url: str,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    nowhere = create_engine(
        f"postgresql://prism@127.0.0.1:{closed_port}/prism", connect_timeout_seconds=1
    )
    here = create_engine(database_url, statement_timeout_ms=50, pool_timeout_seconds=0.2)
    try:
        refused = await _error_of(nowhere, "SELECT 1")
        timed_out = await _error_of(here, "SELECT pg_sleep(1)")
        divided = await _error_of(here, "SELECT 1 / 0")
        wrong = await _error_of(here, "SELECT * FROM no_such_table")
        async with here.connect() as conn:
            backend = await conn.scalar(sa.text("SELECT pg_backend_pid()"))
            owner = await asyncpg.connect(url_for_asyncpg(database_url))
            try:
                await owner.execute("SELECT pg_terminate_backend($1)", backend)
            finally:
                await owner.close()
            try:
                await conn.execute(sa.text("SELECT 1"))
            except Exception as exc:  # noqa: BLE001 - the error is what is examined
                terminated: BaseException = exc
            else:
                raise AssertionError("a terminated connection answered")
    finally:
        await nowhere.dispose()
        await here.dispose()
    assert unavailable(refused)
    assert isinstance(refused, DatabaseUnavailable)
    assert unavailable(timed_out)  # the server could not answer in time
    assert unavailable(terminated)
    assert not unavailable(divided)
    assert not unavailable(wrong)


# --- a command timeout bounds what comes after it too ---------------------------------------

COMMAND_TIMEOUT = 2.0


async def test_a_timed_out_connection_is_dropped_not_waited_on(
    own_postgres: OwnPostgres,
    faults_setup: tuple[Settings, str, Tenant],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With PostgreSQL frozen, asyncpg's answer to a command timeout (a cancel request to the
    frozen server) would make the next command on that connection (the rollback, the pool's
    reset, a ping) wait without limit. Each transaction here must fail within the command
    timeout and a little more: the connection is terminated and the pool replaces it."""
    url = faults_setup[1]
    engine = create_engine(
        url,
        command_timeout_seconds=COMMAND_TIMEOUT,
        pool_timeout_seconds=1,
        connect_timeout_seconds=1,
        pool_size=2,
        max_overflow=0,
    )

    async def transaction() -> None:
        async with engine.connect() as conn, conn.begin():
            await conn.execute(sa.text("SELECT 1"))

    try:
        await asyncio.gather(transaction(), transaction())  # two pooled connections
        own_postgres.freeze()
        try:
            # a statement on a pooled connection, then (the pool now pinging every
            # checkout) a ping, then new connections: each answers within bounds
            for label in ("statement", "ping", "connect"):
                if label == "ping":
                    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_SECONDS", 0.0)
                started = time.monotonic()
                with pytest.raises(Exception) as caught:  # noqa: PT011 - checked just below
                    await asyncio.wait_for(transaction(), timeout=COMMAND_TIMEOUT * 4 + 10)
                elapsed = time.monotonic() - started
                assert unavailable(caught.value), (label, repr(caught.value))
                assert not isinstance(caught.value, TimeoutError | asyncio.CancelledError), label
                assert elapsed < COMMAND_TIMEOUT * 2 + SLACK, (label, elapsed)
        finally:
            own_postgres.thaw()
        # and once thawed the pool serves again, with fresh connections
        await asyncio.wait_for(transaction(), timeout=10)
    finally:
        await engine.dispose()


async def test_answers_without_the_request_deadline_come_within_bounds_while_frozen(
    own_postgres: OwnPostgres,
    faults_setup: tuple[Settings, str, Tenant],
) -> None:
    """No HTTP request deadline (PRISM_REQUEST_TIMEOUT_SECONDS=0), and paths that never had
    one: a WebSocket's connection_init, a subscription's read on an open socket, the separate
    metrics listener's scrape, a POST. With PostgreSQL frozen, each answers within the
    command timeout and a little more, and the log says each outage in one line."""
    settings, _url, tenant = faults_setup
    token = tenant.tokens[Role.ADMIN]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    settings = settings.model_copy(
        update={
            "request_timeout_seconds": 0,
            "database_command_timeout_seconds": COMMAND_TIMEOUT,
            "metrics_address": f"127.0.0.1:{metrics_port}",
            "websocket_recheck_seconds": 1,
        }
    )
    bound = COMMAND_TIMEOUT * 2 + SLACK
    documents = {"query": "{ documents(first: 1) { totalCount } }"}
    headers = {"authorization": f"Bearer {token}"}
    with ServedApp(settings) as served:
        ws_url = served.url.replace("http://", "ws://") + "/graphql"
        async with httpx.AsyncClient(base_url=served.url, timeout=60) as http:
            for _ in range(3):  # pooled connections
                assert (await http.post("/graphql", json=documents, headers=headers)).is_success
            opened = await websockets.connect(
                ws_url, subprotocols=[Subprotocol("graphql-transport-ws")]
            )
            init = {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
            await opened.send(orjson.dumps(init).decode())
            assert orjson.loads(await opened.recv())["type"] == "connection_ack"
            await asyncio.sleep(6)  # pooled connections idle past the ping threshold
            own_postgres.freeze()
            try:
                timings: dict[str, float] = {}
                # connection_init: closed 1013 (try again later)
                started = time.monotonic()
                async with websockets.connect(
                    ws_url, subprotocols=[Subprotocol("graphql-transport-ws")]
                ) as fresh:
                    await fresh.send(orjson.dumps(init).decode())
                    with pytest.raises(ConnectionClosed) as closed:
                        await asyncio.wait_for(fresh.recv(), timeout=30)
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1013
                timings["connection_init"] = time.monotonic() - started
                # a subscription's first read on the open socket: a coded error
                started = time.monotonic()
                subscribe = {
                    "id": "p",
                    "type": "subscribe",
                    "payload": {
                        "query": "subscription($id: ID!) { documentProgress(id: $id) "
                        "{ processingStatus } }",
                        "variables": {"id": to_global_id("Document", uuid.uuid4())},
                    },
                }
                await opened.send(orjson.dumps(subscribe).decode())
                message = orjson.loads(await asyncio.wait_for(opened.recv(), timeout=30))
                timings["subscription"] = time.monotonic() - started
                errors = message.get("payload") or []
                if isinstance(errors, dict):
                    errors = errors.get("errors") or []
                assert [e["extensions"]["code"] for e in errors] == ["SERVICE_UNAVAILABLE"], message
                # the metrics listener: the other metrics, without the job counts
                async with httpx.AsyncClient(timeout=30) as scraper:
                    started = time.monotonic()
                    scrape = await scraper.get(f"http://127.0.0.1:{metrics_port}/metrics")
                    timings["metrics"] = time.monotonic() - started
                assert scrape.status_code == 200
                assert "prism_db_pool" in scrape.text
                # a POST, no request deadline
                started = time.monotonic()
                answer = await http.post("/graphql", json=documents, headers=headers)
                timings["post"] = time.monotonic() - started
                assert answer.status_code == 503
                assert codes(answer.json()) == ["SERVICE_UNAVAILABLE"]
                await asyncio.sleep(2.5)  # the open socket's credential re-checks
            finally:
                own_postgres.thaw()
            await opened.close()
            assert await _wait_ready(http, 30) >= 0
        logs = served.logs
    print("answered while frozen (s):", {label: round(took, 2) for label, took in timings.items()})
    slow = {label: round(took, 1) for label, took in timings.items() if took > bound}
    assert not slow, f"answered later than {bound} s: {slow}"
    lines = logs.splitlines()
    rechecks = [line for line in lines if "websocket credential re-check failed" in line]
    counts = [line for line in lines if "job counts unavailable" in line]
    assert rechecks, logs[-3000:]
    assert counts, logs[-3000:]
    # outages are one line each, without a stack
    assert all(orjson.loads(line).get("database") == "unavailable" for line in rechecks + counts)
    assert "Traceback" not in logs, next(line for line in lines if "Traceback" in line)[:2000]


# --- a progress stream across a PostgreSQL restart ------------------------------------------

PROGRESS = "subscription($id: ID!) { documentProgress(id: $id) { processingStatus } }"


async def _progress(base_url: str, token: str, document_id: str, seen: list[Any]) -> None:
    """Follow one document's progress until the stream completes."""
    url = base_url.replace("http://", "ws://") + "/graphql"
    async with websockets.connect(url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
        init = {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
        await ws.send(orjson.dumps(init).decode())
        assert orjson.loads(await ws.recv())["type"] == "connection_ack"
        subscribe = {
            "id": "1",
            "type": "subscribe",
            "payload": {"query": PROGRESS, "variables": {"id": document_id}},
        }
        await ws.send(orjson.dumps(subscribe).decode())
        while True:
            message = orjson.loads(await ws.recv())
            seen.append(message)
            if message["type"] in ("complete", "error"):
                return


async def test_a_progress_stream_open_across_a_restart_gets_its_end(
    own_postgres: OwnPostgres,
    faults_setup: tuple[Settings, str, Tenant],
) -> None:
    """PostgreSQL restarts while a client follows a document's progress, and the document is
    processed right after it is back, before the server's LISTEN connection is (its
    reconnect backs off): the NOTIFY of the end goes to nobody. The stream still ends, with
    the document COMPLETED, soon after."""
    settings, url, tenant = faults_setup
    admin = tenant.tokens[Role.ADMIN]
    with ServedApp(settings) as served:
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as http:
            data = CONTRACT_TXT + os.urandom(8).hex().encode()
            answer = await upload(http, admin, "restart.txt", data, content_type="text/plain")
            document_id = answer.json()["data"]["uploadDocument"]["document"]["id"]
            seen: list[Any] = []
            stream = asyncio.create_task(_progress(served.url, admin, document_id, seen))
            try:
                for _ in range(100):  # the current state first
                    if seen:
                        break
                    await asyncio.sleep(0.1)
                assert seen, "no first progress event"
                await asyncio.to_thread(own_postgres.stop)
                await asyncio.sleep(9)  # the LISTEN connection's backoff grows meanwhile
                await asyncio.to_thread(own_postgres.start)
                await _wait_ready(http, 30)
                # a worker (as `prism worker` would) processes the document at once
                services = bootstrap.build_services(settings, url)
                try:
                    assert await run_jobs(services) >= 1
                finally:
                    await services.close()
                processed = time.monotonic()
                await asyncio.wait_for(asyncio.shield(stream), timeout=25)
                ended_after = time.monotonic() - processed
            finally:
                stream.cancel()
    statuses = [
        m["payload"]["data"]["documentProgress"]["processingStatus"]
        for m in seen
        if m["type"] == "next"
    ]
    assert statuses[-1] == "COMPLETED", seen
    assert seen[-1]["type"] == "complete"
    print(f"stream ended {ended_after:.1f} s after the document was processed")
