"""The physical limit (issue 16): for each query, the fastest single statement PostgreSQL can
answer it with, served by the raw server on bare asyncpg.

The candidates of a query are

- **prism-compiled**'s statement: what Prism's compiled planner makes of the registered
  operation for the benchmark's principal (``prism.execution.plans.make_plan``, bound as the
  request path binds it), with the values of the benchmark's request; it returns the whole
  answer, in Prism's shape, as JSON text;
- **postgraphile**'s (and **postgraphile5**'s) statement: the one data statement the server
  sent for one request of the query, captured with its values (``capture.js``), when it sent
  exactly one besides its transaction and settings; it returns PostGraphile's rows, which the
  raw server reshapes into Prism's answer (``raw_app.SHAPES``).

Each is timed on the same data, inside a transaction as ``prism_app`` with ``prism.org_id``
set, as the raw server runs it: EXPLAIN (ANALYZE, TIMING OFF) ``--limit-repeat`` times, the
median of PostgreSQL's execution time deciding; the median round trip of the statement itself
is recorded beside it. The fastest is chosen; a query with no single-statement candidate
(the compiled planner leaves it to the interpreted path, PostGraphile sends one statement per
root field) keeps Prism's interpreted statements (``raw_app``'s handlers). The
choice and its reason go to perf.json (``limit``) and perf.md.

PostGraphile's statements leave the organization to row-level security (Prism's also name it,
and the classifications the principal may read): for the benchmark's principal both read the
same rows, and every server's answer, the raw server's included, is checked equal before any
timing."""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.perf.data import Dataset
from bench.perf.queries import Query

# Statements of PostGraphile's request that are not the data statement.
NOT_DATA = re.compile(
    r"^\s*(begin|commit|rollback|savepoint|release|select\s+set_config|"
    r"select\s+\$1::text\s+as\s+\"?__|set\s|reset\s)",
    re.IGNORECASE,
)


@dataclass
class Candidate:
    source: str  # prism-compiled, postgraphile, postgraphile5
    sql: str
    args: list[Any]  # JSON values; the raw server converts them by the parameter types
    shape: str  # how the raw server turns the rows into Prism's answer (raw_app.SHAPES)
    explain_ms: float | None = None  # median EXPLAIN ANALYZE execution time
    round_trip_ms: float | None = None  # median time of the statement from asyncpg
    rows: int | None = None  # rows it returned


def jsonable(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)  # UUID, enums


async def compiled_candidate(bench: Any, dataset: Dataset, query: Query) -> Candidate | str:
    """prism-compiled's statement for the query, or why there is none."""
    from graphql import parse

    from prism.authn.bearer import authenticate_bearer
    from prism.execution.fragments import NotPlanned
    from prism.execution.plans import make_plan

    body = query.bodies.get("prism")
    if body is None:
        return "no Prism body"
    principal = await authenticate_bearer(
        bench.services.db, bench.services.access_tokens, dataset.token
    )
    variables = body.get("variables") or {}
    # As the request path plans and binds it (a statement that binds the caller's identity,
    # the viewer's, included).
    entry = make_plan(parse(query.registered[1]), None, principal, variables)
    if isinstance(entry, str):
        return f"the compiled planner does not plan it ({entry})"
    try:
        compiled = entry.bind(variables, principal)
    except NotPlanned as reason:
        return f"the compiled planner does not plan it ({reason})"
    sql, names = compiled.sql.driver  # asyncpg's text ($1, ...) and the values' names
    args = [jsonable(compiled.values[name]) for name in names]
    return Candidate("prism-compiled", sql, args, "prism-json")


def start_capture(server: Any) -> int:
    """Turn the server's statement capture on; where its capture file ends now."""
    path = Path(server.env["BENCH_CAPTURE"])
    start = path.stat().st_size if path.exists() else 0
    os.kill(server.pid, signal.SIGUSR2)
    time.sleep(0.2)
    return start


def stop_capture(server: Any, start: int) -> list[dict[str, Any]]:
    path = Path(server.env["BENCH_CAPTURE"])
    os.kill(server.pid, signal.SIGUSR2)
    time.sleep(0.2)
    with path.open() as f:
        f.seek(start)
        lines = [json.loads(line) for line in f if line.strip()]
    return [line for line in lines if "text" in line]


def postgraphile_candidate(
    server: Any, query: Query, token: str, post: Any
) -> tuple[Candidate | str, list[dict[str, Any]]]:
    """The data statement a PostGraphile server sent for one request, or why there is none;
    and every statement it sent."""
    start = start_capture(server)
    try:
        status, answer = post(server.url, query.bodies[server.name], token)
    finally:
        sent = stop_capture(server, start)
    if status != 200 or not isinstance(answer, dict) or answer.get("errors"):
        return f"{server.name} failed: HTTP {status}: {str(answer)[:300]}", sent
    data = [s for s in sent if not NOT_DATA.match(s["text"])]
    if len(data) != 1:
        return f"{server.name} sent {len(data)} data statements, not one", sent
    shape = f"{server.name}:{query.registered[0]}"
    from bench.perf.raw_app import SHAPES

    if shape not in SHAPES:
        return f"{server.name}: no reshaping of its rows into Prism's answer ({shape})", sent
    return Candidate(server.name, data[0]["text"], list(data[0]["values"]), shape), sent


def convert(value: Any, type_name: str, kind: str = "scalar") -> Any:
    """A captured JSON value as asyncpg wants it for a parameter of ``type_name``."""
    import datetime
    import uuid

    if value is None:
        return None
    if kind == "array" or type_name.startswith("_"):
        items = json.loads(value) if isinstance(value, str) else value
        return [convert(v, type_name.removeprefix("_")) for v in items]
    if type_name == "uuid":
        return uuid.UUID(str(value))
    if type_name in ("int2", "int4", "int8"):
        return int(value)
    if type_name in ("float4", "float8"):
        return float(value)
    if type_name == "numeric":
        import decimal

        return decimal.Decimal(str(value))
    if type_name == "bool":
        return value if isinstance(value, bool) else str(value).lower() in ("t", "true", "1")
    if type_name in ("json", "jsonb"):
        return value if isinstance(value, str) else json.dumps(value)
    if type_name in ("timestamptz", "timestamp"):
        return datetime.datetime.fromisoformat(str(value))
    return value if isinstance(value, str) else str(value)


async def typed_args(conn: Any, sql: str, args: list[Any]) -> list[Any]:
    """The captured values converted by the statement's parameter types. Prepared inside a
    transaction: a bare ``prepare`` (its type introspection) leaves the connection unable to
    begin a REPEATABLE READ transaction afterwards."""
    if conn.is_in_transaction():
        statement = await conn.prepare(sql)
    else:
        async with conn.transaction():
            statement = await conn.prepare(sql)
    types = statement.get_parameters()
    return [convert(v, t.name, t.kind) for v, t in zip(args, types, strict=True)]


async def time_candidate(url: str, organization_id: str, candidate: Candidate, repeat: int) -> None:
    """EXPLAIN ANALYZE and round trips of the statement, as the raw server runs it."""
    import asyncpg

    conn = await asyncpg.connect(url, server_settings={"role": "prism_app"})
    try:
        args = await typed_args(conn, candidate.sql, candidate.args)
        explained: list[float] = []
        trips: list[float] = []
        async with conn.transaction(isolation="repeatable_read"):
            await conn.execute("SELECT set_config('prism.org_id', $1, true)", organization_id)
            for _ in range(repeat + 1):  # the first warms the caches and the plan
                plan = await conn.fetchval(
                    "EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + candidate.sql, *args
                )
                explained.append(json.loads(plan)[0]["Execution Time"])
                started = time.perf_counter()
                rows = await conn.fetch(candidate.sql, *args)
                trips.append((time.perf_counter() - started) * 1000)
        candidate.rows = len(rows)
        candidate.explain_ms = statistics.median(explained[1:])
        candidate.round_trip_ms = statistics.median(trips[1:])
    finally:
        await conn.close()


async def choose(
    bench: Any,
    url: str,
    dataset: Dataset,
    query_list: list[Query],
    postgraphiles: list[Any],
    post: Any,
    repeat: int,
) -> dict[str, Any]:
    """Per query: the candidates, their times, the chosen statement and why. The raw server's
    plan is ``{"queries": {operationName: chosen}}``."""
    chosen: dict[str, Any] = {}
    for query in query_list:
        candidates: list[Candidate] = []
        missing: dict[str, str] = {}
        sent: dict[str, list[str]] = {}  # every statement each PostGraphile sent
        found = await compiled_candidate(bench, dataset, query)
        if isinstance(found, str):
            missing["prism-compiled"] = found
        else:
            candidates.append(found)
        for server in postgraphiles:
            if server.name not in query.bodies:
                continue
            pg, statements = postgraphile_candidate(server, query, dataset.token, post)
            sent[server.name] = [s["text"] for s in statements]
            if isinstance(pg, str):
                missing[server.name] = pg
            else:
                candidates.append(pg)
        for candidate in list(candidates):
            try:
                await time_candidate(url, dataset.organization_id, candidate, repeat)
            except Exception as error:  # noqa: BLE001 - a candidate PostgreSQL refuses is none
                candidates.remove(candidate)
                missing[candidate.source] = f"failed on bare asyncpg: {error!r}"
        best = min(candidates, key=lambda c: c.explain_ms or 0.0, default=None)
        if best is None:
            reason = "no single-statement candidate; Prism's interpreted statements kept"
        else:
            others = [c for c in candidates if c is not best]
            reason = (
                f"{best.source}: {best.explain_ms:.3f} ms (EXPLAIN ANALYZE median)"
                + "".join(f" vs {c.source} {c.explain_ms:.3f} ms" for c in others)
                + ("" if others else ", the only candidate")
            )
        chosen[query.name] = {
            "operation": query.registered[0],
            "chosen": None if best is None else asdict(best),
            "candidates": [asdict(c) for c in candidates],
            "missing": missing,
            "sent": sent,
            "reason": reason,
        }
        print(f"  limit {query.name}: {reason}", flush=True)
        for name, why in missing.items():
            print(f"    no {name} candidate: {why}", flush=True)
    return chosen


def raw_plan(chosen: dict[str, Any]) -> dict[str, Any]:
    """What the raw server reads (BENCH_LIMIT_PLAN): operationName -> the chosen statement."""
    return {
        "queries": {
            v["operation"]: {k: v["chosen"][k] for k in ("source", "sql", "args", "shape")}
            for v in chosen.values()
            if v["chosen"] is not None
        }
    }
