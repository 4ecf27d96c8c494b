"""Fixtures: one real PostgreSQL per test session (the embedded one from pgserver, or
PRISM_TEST_DATABASE_URL), a fresh migrated database, the real app over ASGI, and tenants
made through the same operator functions the CLI uses. Tests isolate themselves by working
in organizations of their own."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from playwright.async_api import Browser
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from prism import bootstrap
from prism.config import Settings
from prism.db import embedded, migrations
from prism.services import Services
from prism.web.app import create_app
from tests.browser import Profile, launched_chromium, loopback_profile
from tests.factories import Tenant, make_tenant


def _server_url(tmp: Path) -> str:
    given = os.environ.get("PRISM_TEST_DATABASE_URL")
    if given:
        return given
    return embedded.start(tmp / "pg-data")


async def _create_database(server_url: str, name: str) -> str:
    admin = make_url(server_url).set(database="postgres")
    conn = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _server_url(tmp_path_factory.mktemp("postgres"))


NewDatabase = Callable[[], Awaitable[str]]


@pytest.fixture(scope="session")
def new_database(server_url: str) -> NewDatabase:
    """A factory of empty databases on the test server."""

    async def make() -> str:
        return await _create_database(server_url, f"prism_test_{uuid.uuid4().hex[:10]}")

    return make


@pytest.fixture(scope="session")
async def database_url(new_database: NewDatabase) -> str:
    url = await new_database()
    await asyncio.to_thread(migrations.upgrade, url)
    return url


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=SecretStr(database_url),
        data_dir=tmp_path_factory.mktemp("data"),
        jwt_secret=SecretStr("test-secret-" + "x" * 40),
        # Cheap hashes keep the suite fast; the algorithm (argon2id) is the production one.
        password_hash_time_cost=1,
        password_hash_memory_kib=1024,
        password_hash_parallelism=1,
        log_json=True,
        log_level="WARNING",
        # Workers of the suite run only the jobs a test queues; governance tests queue theirs.
        lifecycle_interval_hours=0,
    )


@pytest.fixture(scope="session")
async def services(settings: Settings, database_url: str) -> AsyncIterator[Services]:
    built = bootstrap.build_services(settings, database_url)
    yield built
    await built.close()


@pytest.fixture(scope="session")
async def app(settings: Settings, database_url: str) -> AsyncIterator[object]:
    application = create_app(settings, database_url=database_url)
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def client(app: object) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4711))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://prism.test") as http:
        yield http


@pytest.fixture
async def tenant(services: Services) -> Tenant:
    return await make_tenant(services)


@pytest.fixture
async def other_tenant(services: Services) -> Tenant:
    return await make_tenant(services)


class RedisServer:
    """A real redis-server process of our own, on a free port, that tests may stop and
    start again (the outage tests)."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed (make test installs it: scripts/redis.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@asynccontextmanager
async def app_with(settings: Settings, database_url: str) -> AsyncIterator[Any]:
    """Another app on the same database, with other settings."""
    application = create_app(settings, database_url=database_url)
    async with LifespanManager(application):
        yield application


def client_of(app: Any, ip: str = "203.0.113.7") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 4711))
    return httpx.AsyncClient(transport=transport, base_url="http://prism.test")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def opensearch_url() -> str:
    """The OpenSearch node `make test` starts (scripts/opensearch.sh). In CI a missing node
    fails the tests that need it; elsewhere they are skipped, saying why."""
    url = os.environ.get("PRISM_TEST_OPENSEARCH_URL", "")
    problem = "" if url else "PRISM_TEST_OPENSEARCH_URL is not set (`make test` sets it)"
    if url:
        try:
            health = httpx.get(f"{url}/_cluster/health", timeout=10)
            if health.status_code != 200:
                problem = f"OpenSearch at {url} answered {health.status_code}"
        except httpx.HTTPError as exc:
            problem = f"OpenSearch at {url} is unreachable: {exc}"
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs a real OpenSearch node: {problem}")
        pytest.skip(f"no OpenSearch node: {problem}; start one with scripts/opensearch.sh start")
    return url


@pytest.fixture(scope="session")
async def chromium() -> AsyncIterator[Browser]:
    """Debian's headless Chromium (tests/browser.py): fails under CI=true when missing,
    skips elsewhere."""
    async with launched_chromium() as browser:
        yield browser


@pytest.fixture
async def browser_profile(chromium: Browser) -> AsyncIterator[Profile]:
    """A fresh profile of that Chromium with the network cut to loopback."""
    async with loopback_profile(chromium) as profile:
        yield profile


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """The Kafka broker `make test` starts (scripts/kafka.sh), as host:port. In CI a missing
    broker fails the tests that need it; elsewhere they are skipped, saying why."""
    address = os.environ.get("PRISM_TEST_KAFKA_BOOTSTRAP", "")
    problem = "" if address else "PRISM_TEST_KAFKA_BOOTSTRAP is not set (`make test` sets it)"
    if address:
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except (OSError, ValueError) as exc:
            problem = f"Kafka at {address} is unreachable: {exc}"
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs a real Kafka broker: {problem}")
        pytest.skip(f"no Kafka broker: {problem}; start one with scripts/kafka.sh start")
    return address
