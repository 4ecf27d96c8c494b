"""The `prism` command line, run as a real process: operator commands against the test
database, and the README's run flow on the embedded PostgreSQL while commands share it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.factories import codes, gql

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str, dict[str, str]]]:
    """`prism serve --demo` on the embedded PostgreSQL, as the README's run command does."""
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
