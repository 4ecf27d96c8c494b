"""The fixed cost of a planned request, in process: CPU time of this process (the app and the
in-process HTTP client; PostgreSQL runs apart) per request of registered queries answered by
the compiled path, sequentially, after a warm-up.

    .venv/bin/python -m bench.lean [--requests 400] [--auth-cache 10] [--data DIR] [--no-lean]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from bench import common
from prism import bootstrap
from prism.config import Settings
from prism.db import embedded, migrations
from prism.models.enums import Role
from prism.models.registered_operations import register_operations
from prism.operations.persisted import split_operations
from prism.web.app import create_app
from tests.factories import add_document, make_tenant

OPERATIONS = """
query Nested($first: Int) {
  documents(first: $first) { edges { node { id filename sections(first: 5) {
    edges { node { id order } } } } } } }
query One($id: ID!) { node(id: $id) { id ... on Document { filename classification
  sections(first: 3) { edges { node { name } } } } } }
"""


async def _database(server: str) -> str:
    admin = make_url(server).set(database="postgres")
    name = f"prism_lean_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    await asyncio.to_thread(migrations.upgrade, url)
    return url


def _postgres_cpu(data: Path) -> float:
    """CPU seconds of the embedded PostgreSQL's processes so far (its connections persist
    through a run: the pool's and the LISTEN ones)."""
    try:
        root = psutil.Process(int((data / "pg" / "postmaster.pid").read_text().split()[0]))
        processes = [root, *root.children(recursive=True)]
    except (OSError, ValueError, psutil.Error):
        return float("nan")
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


async def main(
    requests: int, auth_cache: float, data: Path, documents: int, *, lean: bool = True
) -> None:
    url = await _database(embedded.start(data))
    settings = Settings(
        database_url=SecretStr(url),
        data_dir=Path(tempfile.mkdtemp(prefix="prism-lean-")),
        jwt_secret=SecretStr("bench-secret-" + "x" * 40),
        password_hash_time_cost=1,
        password_hash_memory_kib=1024,
        password_hash_parallelism=1,
        log_level="WARNING",
        lifecycle_interval_hours=0,
        response_cache_ttl_seconds=0,
        auth_cache_seconds=auth_cache,
        # Every request answered, none refused: the run measures answers.
        rate_limit_capacity=1_000_000_000,
        rate_limit_refill_per_second=1_000_000_000.0,
        lean_path=lean,
    )
    services = bootstrap.build_services(settings, url)
    tenant = await make_tenant(services)
    docs = [await add_document(services, tenant) for _ in range(documents)]
    async with services.db.transaction(None) as session:
        stored = await register_operations(
            session, split_operations(OPERATIONS, common.core_schema())
        )
    digests = {name: digest for name, digest, _ in stored}
    await services.close()
    from prism.execution.ids import to_global_id

    cases: dict[str, dict[str, Any]] = {
        "Nested": {"first": documents},
        "One": {"id": to_global_id("Document", docs[0].id)},
    }
    app = create_app(settings, database_url=url)
    token = tenant.tokens[Role.REVIEWER]
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4711))
        async with httpx.AsyncClient(transport=transport, base_url="http://prism.test") as client:
            for name, variables in cases.items():
                body = {
                    "extensions": {"persistedQuery": {"version": 1, "sha256Hash": digests[name]}},
                    "variables": variables,
                }
                headers = {"authorization": f"Bearer {token}"}

                async def one(
                    body: dict[str, Any] = body, headers: dict[str, str] = headers
                ) -> Any:
                    response = await client.post("/graphql", json=body, headers=headers)
                    return response.json()

                first = await one()
                assert first["extensions"]["execution"]["path"] == "compiled", first
                assert not first.get("errors"), first
                for _ in range(max(50, requests // 5)):
                    await one()
                cpu, wall, pg = time.process_time(), time.perf_counter(), _postgres_cpu(data)
                for _ in range(requests):
                    await one()
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                pg = _postgres_cpu(data) - pg
                last = await one()
                assert last["extensions"]["execution"]["path"] == "compiled", last
                print(
                    f"{name}: {requests} requests, CPU {cpu / requests * 1000:.3f} ms/request, "
                    f"PostgreSQL CPU {pg / requests * 1000:.3f} ms/request, "
                    f"wall {wall / requests * 1000:.3f} ms/request"
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--documents", type=int, default=10)
    parser.add_argument("--auth-cache", type=float, default=10.0)
    parser.add_argument(
        "--data", type=Path, default=Path(tempfile.gettempdir()) / "prism-lean-bench"
    )
    parser.add_argument(
        "--no-lean", action="store_true", help="the full path only (PRISM_LEAN_PATH=false)"
    )
    args = parser.parse_args()
    asyncio.run(
        main(args.requests, args.auth_cache, args.data, args.documents, lean=not args.no_lean)
    )
