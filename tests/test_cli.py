"""The `prism` command line, run as a real process: operator commands against the test
database, and the README's run flow on the embedded PostgreSQL while commands share it."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.typing import Subprotocol

from prism.models.enums import Role
from tests.factories import Tenant, codes, gql

PRISM = [sys.executable, "-m", "prism.cli"]
FAST_HASH = {
    "PRISM_PASSWORD_HASH_TIME_COST": "1",
    "PRISM_PASSWORD_HASH_MEMORY_KIB": "1024",
    "PRISM_PASSWORD_HASH_PARALLELISM": "1",
}
DONE_WHEN = (
    "{ viewer { organization { name } } documents(first: 5) { totalCount edges { node {"
    " filename sections { edges { node { name } } } } } } }"
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
    return {**env, **FAST_HASH, "PRISM_LOG_LEVEL": "WARNING", **extra}


def _prism(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PRISM, *args], env=env, capture_output=True, text=True, check=check, timeout=120
    )


async def test_operator_commands_print_json_and_the_token_works(
    database_url: str, client: httpx.AsyncClient
) -> None:
    env = _env(PRISM_DATABASE_URL=database_url, PRISM_JWT_SECRET="j" * 40)
    name = f"Cli {uuid.uuid4().hex[:6]}"
    org = json.loads(_prism("org", "create", name, "--json", env=env).stdout)
    assert org["name"] == name
    user = json.loads(
        _prism(
            "user",
            "create",
            "--org",
            name,
            "--email",
            f"ops@{org['id'][:8]}.test",
            "--password",
            "a long enough password",
            "--role",
            "reviewer",
            "--clearance",
            "confidential",
            "--department",
            "legal",
            "--json",
            env=env,
        ).stdout
    )
    assert (user["role"], user["clearance"]) == ("REVIEWER", "CONFIDENTIAL")
    created = json.loads(
        _prism(
            "token",
            "create",
            "--org",
            org["id"],
            "--name",
            "ci",
            "--scopes",
            "documents:read,search:read",
            "--user",
            user["email"],
            "--expires-in-days",
            "7",
            "--json",
            env=env,
        ).stdout
    )
    assert created["token"].startswith("prism_pat_")
    body = await gql(client, "{ viewer { user { email } scopes } }", token=created["token"])
    assert body["data"]["viewer"] == {
        "user": {"email": user["email"]},
        "scopes": ["documents:read", "search:read"],
    }
    # errors are clear, with a non-zero exit and no traceback
    again = _prism("org", "create", name, env=env, check=False)
    assert again.returncode == 1
    assert "exists already" in again.stderr
    assert "Traceback" not in again.stderr
    bad = _prism(
        "token", "create", "--org", name, "--name", "x", "--scopes", "root", env=env, check=False
    )
    assert bad.returncode == 1
    assert "Unknown or missing scopes" in bad.stderr


async def test_operations_push_registers_what_clients_call_by_hash(
    client: httpx.AsyncClient, database_url: str, tenant: Tenant, tmp_path: Path
) -> None:
    env = _env(PRISM_DATABASE_URL=database_url, PRISM_JWT_SECRET="j" * 40)
    source = tmp_path / "dashboard.graphql"
    source.write_text(
        f"# {tenant.org_id}\nquery DashboardCount {{ documents {{ totalCount }} }}\n"
        "query DashboardMe { viewer { scopes } }\n"
    )
    pushed = json.loads(_prism("operations", "push", str(source), "--json", env=env).stdout)
    assert set(pushed) == {"DashboardCount", "DashboardMe"}
    listed = _prism("operations", "list", env=env).stdout
    assert pushed["DashboardCount"] in listed
    body = await client.post(
        "/graphql",
        json={
            "extensions": {"persistedQuery": {"version": 1, "sha256Hash": pushed["DashboardCount"]}}
        },
        headers={"authorization": f"Bearer {tenant.tokens[Role.VIEWER]}"},
    )
    assert body.json()["data"] == {"documents": {"totalCount": 0}}
    broken = tmp_path / "broken.graphql"
    broken.write_text("query Broken { documentz { totalCount } }")
    refused = _prism("operations", "push", str(broken), env=env, check=False)
    assert refused.returncode == 1
    assert "Does not validate" in refused.stderr
    assert "Traceback" not in refused.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, dict[str, str]]]:
    """`prism serve --demo` on the embedded PostgreSQL, as the README's run command does."""
    tmp_path = tmp_path_factory.mktemp("served")
    port = _free_port()
    env = _env(PRISM_DATA_DIR=str(tmp_path / "var"), PRISM_PORT=str(port))
    log = tmp_path / "serve.log"
    with log.open("w") as stderr:  # a file, not a pipe: a full pipe would stall the server
        process = subprocess.Popen(
            [*PRISM, "serve", "--demo", "--with-worker"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        assert process.stdout is not None
        token = process.stdout.readline().strip()
        assert token.startswith("prism_pat_"), log.read_text()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield url, token, env
    finally:
        process.terminate()
        process.wait(timeout=30)
        # not communicate(): the extraction forkserver may hold the pipe a moment longer
        process.stdout.close()  # type: ignore[union-attr]


def test_run_flow_on_embedded_postgres(served: tuple[str, str, dict[str, str]]) -> None:
    url, token, env = served
    # the Done-when query answers with the printed token
    response = httpx.post(
        f"{url}/graphql",
        json={"query": DONE_WHEN},
        headers={"authorization": f"Bearer {token}"},
        timeout=10,
    )
    data = response.json()["data"]
    assert data["viewer"]["organization"]["name"] == "Acme Legal"
    assert data["documents"]["totalCount"] == 5
    assert all(e["node"]["sections"]["edges"] for e in data["documents"]["edges"])
    # commands work while the server runs, on the same embedded database
    created = json.loads(
        _prism(
            "token",
            "create",
            "--org",
            "Acme Legal",
            "--name",
            "side",
            "--scopes",
            "documents:read",
            "--json",
            env=env,
        ).stdout
    )
    side = httpx.post(
        f"{url}/graphql",
        json={"query": "{ documents { totalCount } }"},
        headers={"authorization": f"Bearer {created['token']}"},
        timeout=10,
    ).json()
    # an unbound token is a VIEWER with INTERNAL clearance: PUBLIC and INTERNAL documents only
    assert side["data"]["documents"]["totalCount"] == 3
    # the demo again: reused, not duplicated; the old demo token is revoked for the new one
    rerun = _prism("demo", env=env)
    new_token = rerun.stdout.strip().splitlines()[-1]
    assert "already present" in rerun.stderr
    again = httpx.post(
        f"{url}/graphql",
        json={"query": DONE_WHEN},
        headers={"authorization": f"Bearer {new_token}"},
        timeout=10,
    ).json()
    assert again["data"]["documents"]["totalCount"] == 5
    old = httpx.post(
        f"{url}/graphql",
        json={"query": DONE_WHEN},
        headers={"authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert old.status_code == 401
    assert codes(old.json()) == ["UNAUTHENTICATED"]


async def _subscribe(url: str, token: str | None, document_id: str) -> list[dict[str, Any]]:
    """documentProgress over graphql-transport-ws until the server completes the stream."""
    ws_url = url.replace("http://", "ws://") + "/graphql"
    events: list[dict[str, Any]] = []
    async with websockets.connect(ws_url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
        init: dict[str, Any] = {"type": "connection_init"}
        if token:
            init["payload"] = {"authorization": f"Bearer {token}"}
        await ws.send(json.dumps(init))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {
                        "query": "subscription($id: ID!) { documentProgress(id: $id) {"
                        " processingStatus sectionsAnalyzed totalSections"
                        " document { filename } } }",
                        "variables": {"id": document_id},
                    },
                }
            )
        )
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
            if message["type"] == "complete":
                return events
            assert message["type"] == "next", message
            events.append(message["payload"])


async def test_upload_is_processed_and_watched_live(
    served: tuple[str, str, dict[str, str]],
) -> None:
    url, _, env = served
    # its own token: another test of this module re-runs the demo, which revokes the first
    token = json.loads(
        _prism(
            "token",
            "create",
            "--org",
            "Acme Legal",
            "--name",
            "live",
            "--scopes",
            "documents:read,documents:write",
            "--user",
            "admin@acme.example",
            "--json",
            env=env,
        ).stdout
    )["token"]
    body = b"1. Term\nThis agreement shall automatically renew.\n2. Fees\nPay within 30 days.\n"
    operations = {
        "query": "mutation($input: UploadDocumentInput!) { uploadDocument(input: $input)"
        " { document { id } } }",
        "variables": {"input": {"file": None}},
    }
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        response = await http.post(
            "/graphql",
            data={
                "operations": json.dumps(operations),
                "map": json.dumps({"0": ["variables.input.file"]}),
            },
            files={"0": ("live.txt", body, "text/plain")},
            headers={"authorization": f"Bearer {token}", "apollo-require-preflight": "1"},
        )
    document_id = response.json()["data"]["uploadDocument"]["document"]["id"]
    events = await _subscribe(url, token, document_id)
    last = events[-1]["data"]["documentProgress"]
    assert last["processingStatus"] == "COMPLETED"
    assert last["sectionsAnalyzed"] == last["totalSections"] == 2
    assert last["document"] == {"filename": "live.txt"}


async def test_subscriptions_need_authentication_at_connection_init(
    served: tuple[str, str, dict[str, str]],
) -> None:
    url, _, _ = served
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await _subscribe(url, None, "RG9jdW1lbnQ6MDAwMDAwMDAtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAw")
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4403


def test_demo_at_scale_answers_bi_queries(served: tuple[str, str, dict[str, str]]) -> None:
    # Last in the module: running the demo again revokes the demo token of `served`.
    url, _, env = served
    done = _prism("demo", "--scale", "60", "--days", "30", env=env)
    assert "Generated in" in done.stderr, done.stderr
    token = done.stdout.strip().splitlines()[-1]
    body = httpx.post(
        f"{url}/graphql",
        json={
            "query": "{ executiveSummary { totalDocumentsProcessed totalActiveUsers }"
            " verifyAuditChain { valid checked } viewer { organization { name } } }"
        },
        headers={"authorization": f"Bearer {token}"},
        timeout=10,
    ).json()
    assert body.get("errors") is None, body
    data = body["data"]
    assert "Acme" not in data["viewer"]["organization"]["name"]
    assert data["verifyAuditChain"]["valid"] is True
    assert data["executiveSummary"]["totalDocumentsProcessed"] > 0
    assert data["executiveSummary"]["totalActiveUsers"] > 0
