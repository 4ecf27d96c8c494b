"""Where Prism's CPU goes under load: py-spy samples the ``prism serve`` process while wrk
drives one query, and the stacks are summed by component (the innermost frame: "self") and by
function (anywhere on the stack: "inclusive").

py-spy is not a dependency of Prism: install it for a profile, e.g.
``.tools/bin/uv pip install --python .venv/bin/python py-spy`` for ``python -m bench.perf``.
``make install`` (and so ``make bench-perf``) removes it from the virtualenv again: for
``make bench-perf PERF_ARGS="--profile 30"`` put it on PATH instead, e.g.
``.tools/bin/uv pip install --target /tmp/py-spy py-spy`` and ``PATH=/tmp/py-spy/bin:$PATH``.

py-spy counts a thread as active when the kernel says it is runnable, whether it runs or
waits for a CPU: on a machine with more runnable threads than CPUs, the samples include the
time the process waited in the run queue, charged to whatever frame it was in (typically
just after a system call that woke another process, such as PostgreSQL's backend). The
kernel's scheduler statistics of the process's main thread (``/proc/PID/task/PID/schedstat``:
time on a CPU, time waiting for one) are recorded beside the samples, so the report can say
how much of them is waiting."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from bench.perf import load

# Components by the file of a frame; the first match wins.
COMPONENTS = (
    ("graphql/execution/", "graphql-core execution"),
    ("graphql/validation/", "graphql-core validation"),
    ("graphql/language/", "graphql-core parse / AST"),
    ("graphql/", "graphql-core other"),
    ("strawberry/dataloader", "Strawberry DataLoader"),
    ("strawberry/extensions/", "Strawberry extensions"),
    ("strawberry/", "Strawberry other"),
    ("prism/schema/", "Prism schema (types, extensions, cost)"),
    ("prism/resolvers/", "Prism resolvers"),
    ("prism/models/", "Prism models (queries, pagination)"),
    ("prism/authz/", "Prism authz"),
    ("prism/", "Prism other"),
    ("sqlalchemy/", "SQLAlchemy"),
    ("asyncpg/", "asyncpg"),
    ("asyncio/", "asyncio"),
    ("uvloop", "asyncio"),
    ("starlette/", "Starlette"),
    ("uvicorn/", "uvicorn"),
    ("httptools", "uvicorn"),
    ("cross_web/", "Strawberry other"),
    ("structlog/", "logging / metrics"),
    ("logging/", "logging / metrics"),
    ("prometheus_client/", "logging / metrics"),
    ("pydantic", "pydantic"),
    ("json/", "JSON"),
    ("orjson", "JSON"),
)
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def schedstat(pid: int) -> tuple[float, float] | None:
    """Seconds the process's main thread (the event loop, where the requests run) has spent
    on a CPU and waiting in the run queue."""
    try:
        fields = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()
    except OSError:
        return None
    return int(fields[0]) / 1e9, int(fields[1]) / 1e9


def find_py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


OTHER = "other (standard library, C)"


def component(path: str) -> str:
    for marker, name in COMPONENTS:
        if marker in path:
            return name
    return OTHER


def parse_frame(frame: str) -> tuple[str, str]:
    match = FRAME.match(frame.strip())
    if match is None:
        return frame.strip(), ""
    return match["function"], match["file"]


def short(path: str) -> str:
    """py-spy names files from their package (``sqlalchemy/orm/state.py``); full paths too."""
    for root in ("site-packages/", "/work/"):
        if root in path:
            return path.split(root, 1)[1]
    return path


def is_prism(path: str) -> bool:
    """Prism's own code, not the entry script or the CLI around the server."""
    return (path.startswith("prism/") or "/prism/" in path) and not path.endswith("cli.py")


# Phases of a request, by a marker frame (file substring, function name or None for any); a
# sample belongs to the innermost marker on its stack.
PHASES = (
    ("authentication (a transaction per request)", "prism/authn/bearer.py", None),
    ("parse", "prism/execution/extensions.py", "ParseCache.on_parse"),
    ("parse", "graphql/language/parser.py", None),
    ("parse", "graphql/language/lexer.py", None),
    ("validation", "graphql/validation/", None),
    ("cost estimate", "prism/execution/cost.py", None),
    ("rate limit, response cache", "prism/execution/limits.py", None),
    (
        "compiled path: the plan, its statement, the JSON parsed",
        "prism/execution/plan",  # planner.py and planned.py
        None,
    ),
    ("persisted operation lookup", "prism/operations/registry.py", None),
    ("execution: resolvers, loaders, their SQL", "graphql/execution/", None),
    ("transaction end (commit)", "prism/execution/context.py", "finish"),
    ("response encoding", "prism/web/graphql.py", "PrismGraphQL.create_response"),
    ("HTTP, ASGI, Strawberry's request handling", "starlette/", None),
    ("HTTP, ASGI, Strawberry's request handling", "uvicorn/", None),
)
# SQLAlchemy's asyncio layer runs the ORM in greenlets: their stacks start at the session
# call, so the request's phase (resolvers, authentication) is not on them.
GREENLET = "SQLAlchemy in its greenlets (row loading, compilation; phase not on the stack)"
OUTSIDE = "event loop, outside a request's stack (asyncpg protocol, its codecs)"


def _phase(frames: list[tuple[str, str]]) -> str:
    for function, path in reversed(frames):
        for name, marker, wanted in PHASES:
            if marker in path and (wanted is None or function.endswith(wanted)):
                return name
    return GREENLET if "sqlalchemy/" in frames[0][1] else OUTSIDE


def _layer(frames: list[tuple[str, str]]) -> str:
    """The innermost frame's component; the standard library and C frames count for the
    nearest known component that called them."""
    for _, path in reversed(frames):
        found = component(path)
        if found != OTHER:
            return found
    return OTHER


def summarize(folded: Path, top: int = 25) -> dict[str, Any]:
    """Samples by phase of the request, by layer, by function (self) and by Prism function
    (inclusive)."""
    total = 0
    by_phase: Counter[str] = Counter()
    by_layer: Counter[str] = Counter()
    self_by_function: Counter[str] = Counter()
    prism_inclusive: Counter[str] = Counter()
    for line in folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [parse_frame(f) for f in stack.split(";")]
        frames = [(fn, path) for fn, path in frames if path]  # drop process / thread labels
        if not frames:
            continue
        total += count
        by_phase[_phase(frames)] += count
        by_layer[_layer(frames)] += count
        leaf_fn, leaf_path = frames[-1]
        self_by_function[f"{leaf_fn} ({short(leaf_path)})"] += count
        mine = {f"{fn} ({short(path)})" for fn, path in frames if is_prism(path)}
        for name in mine:
            prism_inclusive[name] += count

    def share(counter: Counter[str], n: int | None = None) -> list[dict[str, Any]]:
        return [
            {"where": name, "samples": c, "%": 100 * c / total if total else 0.0}
            for name, c in counter.most_common(n)
        ]

    return {
        "samples": total,
        "by_phase": share(by_phase),
        "by_layer": share(by_layer),
        "self_by_function": share(self_by_function, top),
        "prism_inclusive": share(prism_inclusive, top),
    }


def record(
    *,
    py_spy: str,
    pid: int,
    url: str,
    body: Path,
    token: str,
    concurrency: int,
    seconds: int,
    output: Path,
    rate: int = 100,
) -> dict[str, Any]:
    """Sample ``pid`` with py-spy while wrk drives ``body``; the summary and the wrk figures."""
    holder: dict[str, Any] = {}

    def drive() -> None:
        holder["wrk"] = load.wrk(url, body, token, concurrency=concurrency, seconds=seconds + 2)

    driver = threading.Thread(target=drive)
    driver.start()
    before = schedstat(pid)
    subprocess.run(  # noqa: S603 - our own command line
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--output",
            str(output),
        ],
        check=True,
        capture_output=True,
        timeout=seconds + 60,
    )
    after = schedstat(pid)
    driver.join()
    summary = summarize(output)
    if before is not None and after is not None:
        summary["on_cpu_s"] = after[0] - before[0]
        summary["runqueue_wait_s"] = after[1] - before[1]
    summary["wrk"] = holder.get("wrk")
    summary["seconds"] = seconds
    summary["rate_hz"] = rate
    summary["concurrency"] = concurrency
    return summary
