"""The servers under test, one process each on 127.0.0.1, all on the same database:

- ``prism``: ``prism serve`` of this checkout (uvicorn, one worker, production mode), sent
  the query text: the interpreted path;
- ``prism-compiled``: the same ``prism serve`` in a process of its own, sent registered
  operations by hash: the compiled path (one SQL statement builds the answer), with the
  response cache off so that every request runs it;
- ``raw``: ``bench/perf/raw_app.py`` (Starlette + asyncpg + orjson, the same SQL as Prism);
- ``postgraphile``: PostGraphile 4.14 from npm in library mode (``bench/perf/postgraphile.js``),
  installed into a cache directory outside the repository, never a dependency of Prism;
- ``postgraphile5``: PostGraphile 5 (Grafast) configured the same way through its V4 preset
  (``bench/perf/postgraphile5/``: ``server.js`` and the npm project pinned by its
  ``package-lock.json``, installed with ``npm ci`` into the same cache directory); on Node < 22
  it runs with ``Promise.withResolvers`` polyfilled (``--require polyfill.cjs``).

Both PostGraphile servers write the statements they send to a file while capturing (SIGUSR2
toggles it, ``bench/perf/capture.js``): the candidates of the physical limit (``limit.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from bench.common import ROOT
from bench.perf.data import Dataset

HERE = Path(__file__).resolve().parent
POSTGRAPHILE_VERSION = "4.14"
NODE_CACHE = Path(
    os.environ.get("PRISM_BENCH_NODE_DIR", Path.home() / ".cache" / "prism" / "bench-node")
)
# A benchmark drives one token far past any sensible rate limit: the limiter still runs (its
# cost is part of Prism's), it just never refuses.
UNLIMITED = str(10**12)


class ServerFailed(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    command: list[str]
    env: dict[str, str]
    port: int
    ready_path: str
    log_path: Path
    cwd: Path = ROOT
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/graphql"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(  # noqa: S603 - our own command lines
            self.command,
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped without touching ours
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}{self.ready_path}"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise ServerFailed(
                    f"{self.name} exited ({self.process.returncode}):\n{self.tail()}"
                )
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(url, timeout=2) as answer,
            ):
                if answer.status < 500:
                    return
            time.sleep(0.25)
        raise ServerFailed(f"{self.name} not ready after {timeout:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        # The group the server leads (uvicorn or node and anything they started), by its id.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def _base_env() -> dict[str, str]:
    """The caller's environment without Prism's settings: each server gets exactly its own."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}


def prism_server(
    url: str, scratch: Path, workers: int = 1, *, name: str = "prism", **settings: str
) -> Server:
    """``prism serve`` on a free port; ``settings`` are more PRISM_* variables."""
    port = free_port()
    env = {
        **_base_env(),
        "PRISM_DATABASE_URL": url,
        "PRISM_WORKERS": str(workers),
        "PRISM_MODE": "production",
        "PRISM_JWT_SECRET": "perf-bench-" + "k" * 40,
        "PRISM_LOG_LEVEL": "WARNING",
        "PRISM_HOST": "127.0.0.1",
        "PRISM_PORT": str(port),
        "PRISM_DATA_DIR": str(scratch / f"{name}-data"),
        "PRISM_RATE_LIMIT_CAPACITY": UNLIMITED,
        "PRISM_RATE_LIMIT_REFILL_PER_SECOND": UNLIMITED,
        **settings,
    }
    prism = Path(sys.executable).with_name("prism")
    return Server(name, [str(prism), "serve"], env, port, "/healthz", scratch / f"{name}.log")


def prism_compiled_server(url: str, scratch: Path, workers: int = 1) -> Server:
    """The same ``prism serve``, for registered operations: the compiled path on (its
    default, said explicitly) and the response cache off (``0``), so that each request runs
    the compiled statement instead of being answered from the cache."""
    return prism_server(
        url,
        scratch,
        workers,
        name="prism-compiled",
        PRISM_COMPILED_OPERATIONS="true",
        PRISM_RESPONSE_CACHE_TTL_SECONDS="0",
    )


def raw_server(url: str, dataset: Dataset, scratch: Path, plan: Path | None = None) -> Server:
    """The limit; ``plan`` is the physical limit's statements (``limit.py``), written before
    the server starts."""
    port = free_port()
    env = {
        **_base_env(),
        "BENCH_DATABASE_URL": url,
        "BENCH_TOKENS": json.dumps({dataset.token: dataset.token_id}),
        **({"BENCH_LIMIT_PLAN": str(plan)} if plan is not None else {}),
    }
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.perf.raw_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    return Server("raw", command, env, port, "/healthz", scratch / "raw.log")


def pg_connection(url: str) -> dict[str, Any]:
    """node-postgres settings for the same database (a Unix socket is a ``host`` directory)."""
    parsed = make_url(url)
    host = parsed.query.get("host") or parsed.host or "localhost"
    if isinstance(host, tuple):
        host = host[0]
    return {
        "host": host,
        "port": parsed.port or 5432,
        "database": parsed.database,
        "user": parsed.username or "postgres",
        "password": parsed.password or "",
    }


def ensure_postgraphile() -> Path:
    """``npm install postgraphile@4.14`` into the cache directory, once; the module directory."""
    modules = NODE_CACHE / "node_modules"
    package = modules / "postgraphile" / "package.json"
    if package.exists():
        version = json.loads(package.read_text()).get("version", "")
        if version.startswith(POSTGRAPHILE_VERSION + "."):
            return modules
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise ServerFailed(
            "PostGraphile needs Node.js and npm (Debian: apt-get install nodejs npm)."
        )
    NODE_CACHE.mkdir(parents=True, exist_ok=True)
    manifest = NODE_CACHE / "package.json"
    if not manifest.exists():
        manifest.write_text('{"name": "prism-bench-node", "private": true}\n')
    print(f"installing postgraphile@{POSTGRAPHILE_VERSION} into {NODE_CACHE} ...", flush=True)
    subprocess.run(  # noqa: S603
        [npm, "install", "--no-audit", "--no-fund", f"postgraphile@{POSTGRAPHILE_VERSION}"],
        cwd=NODE_CACHE,
        check=True,
        timeout=600,
    )
    return modules


def ensure_postgraphile5() -> Path:
    """``npm ci`` of ``bench/perf/postgraphile5`` (its lock) into the cache directory, again
    whenever the lock changes; the module directory."""
    project = HERE / "postgraphile5"
    target = NODE_CACHE / "postgraphile5"
    lock = (project / "package-lock.json").read_text()
    modules = target / "node_modules"
    installed = target / "package-lock.json"
    if modules.exists() and installed.exists() and installed.read_text() == lock:
        return modules
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise ServerFailed("PostGraphile 5 needs Node.js and npm.")
    target.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(project / name, target / name)
    print(f"installing {project.relative_to(ROOT)} (npm ci) into {target} ...", flush=True)
    subprocess.run(  # noqa: S603
        [npm, "ci", "--no-audit", "--no-fund"], cwd=target, check=True, timeout=600
    )
    return modules


def node_major() -> int:
    node = shutil.which("node")
    if node is None:
        return 0
    done = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)  # noqa: S603
    return int(done.stdout.strip().lstrip("v").split(".")[0] or 0)


def _postgraphile(
    name: str, script: list[str], modules: Path, url: str, dataset: Dataset, scratch: Path
) -> Server:
    """A PostGraphile server (``name``) run by node as ``script`` with its npm modules."""
    port = free_port()
    node = shutil.which("node") or "node"
    env = {
        **_base_env(),
        "NODE_PATH": str(modules),
        "NODE_ENV": "production",
        "BENCH_PG": json.dumps(pg_connection(url)),
        "BENCH_PORT": str(port),
        # The bearer token -> the organization its requests read, as pgSettings.
        "BENCH_TOKENS": json.dumps({dataset.token: dataset.organization_id}),
        "BENCH_CAPTURE": str(scratch / f"{name}-capture.jsonl"),
    }
    return Server(name, [node, *script], env, port, "/healthz", scratch / f"{name}.log")


def postgraphile5_server(url: str, dataset: Dataset, scratch: Path) -> Server:
    modules = ensure_postgraphile5()
    project = HERE / "postgraphile5"
    preload = ["--require", str(project / "polyfill.cjs")] if node_major() < 22 else []
    script = [*preload, str(project / "server.js")]
    return _postgraphile("postgraphile5", script, modules, url, dataset, scratch)


def postgraphile_server(url: str, dataset: Dataset, scratch: Path) -> Server:
    modules = ensure_postgraphile()
    script = [str(HERE / "postgraphile.js")]
    return _postgraphile("postgraphile", script, modules, url, dataset, scratch)
