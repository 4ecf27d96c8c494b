"""Prism beside PostGraphile and the physical limit (issues 8, 9 and 16): ``make bench-perf``.

    .venv/bin/python -m bench.perf                      # the recorded run
    .venv/bin/python -m bench.perf --seconds 5 --warmup 1 --concurrency 10   # a quick look
    .venv/bin/python -m bench.perf --profile 20         # and py-spy profiles of Prism
    .venv/bin/python -m bench.perf --coverage           # the compiled planner's coverage only

Steps: a fresh database migrated by Prism's migrations (embedded PostgreSQL in a temporary
directory, or a new database on PRISM_DATABASE_URL's server, dropped afterwards); 10,000
documents × 5 sections with analyses and feedback in 4 organizations, loaded with COPY; the
Prism text of the queries registered (for prism-compiled, which sends their hashes; the fifth,
``nested-text``, is the nested list sent as text with no hash, as the web client sends it);
the servers started on 127.0.0.1 (PostGraphile 5 left out, with the reason, where it does
not run); the physical limit chosen (``limit.py``: per query the fastest single statement,
prism-compiled's or PostGraphile's, by EXPLAIN ANALYZE on the data) and the raw server started
with it; every server's answer to every query checked equal, and prism-compiled's execution
path checked (compiled where the planner covers the query); the SQL each sends for one request
counted (embedded PostgreSQL only: it reads the server's log); then wrk per query,
concurrency and server. Results: bench/results/perf.md, perf.json, latest.json, perf-sql.md
(with the limit's choices and the planned coverage, ``coverage.py``); with --profile, perf.md
ends with a profile of each of --profile-servers (the stacks are kept in
bench/results/perf-profile-SERVER.folded.txt, not committed). Needs wrk (installed from Debian
when missing and root), Node.js with npm (PostGraphile 4.14 is installed once into
~/.cache/prism/bench-node, PostGraphile 5 from bench/perf/postgraphile5's lock with npm ci).

    .venv/bin/python -m bench.perf --check-only --documents 40 --servers prism-compiled,raw

``--check-only`` stops before the load: the data, the servers, the limit chosen, the answers
checked equal and the SQL counted, the results written without any run (no wrk; Node.js only
for PostGraphile).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from bench import common
from bench.common import bench_database, environment, read_json, write_json
from bench.perf import coverage, limit, load, profile, report, servers
from bench.perf.data import Dataset, generate
from bench.perf.load import FIRST_SEEN
from bench.perf.queries import EXPECTED_PATH, Query, queries

LOG_ENTRY = re.compile(r"^\S+ \S+ \S+ \[\d+\] (?P<level>[A-Z]+):  (?P<text>.*)$")
STATEMENT = re.compile(r"^(?:statement|execute [^:]*): (?P<sql>.*)$", re.DOTALL)


def post(url: str, body: dict[str, Any], token: str, timeout: float = 120) -> tuple[int, Any]:
    request = urllib.request.Request(  # noqa: S310 - loopback
        url,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        text = error.read()
        try:
            return error.code, json.loads(text or b"null")
        except ValueError:
            return error.code, text.decode(errors="replace")[:500]


class Mismatch(RuntimeError):
    pass


def check_answers(
    query_list: list[Query], running: list[servers.Server], token: str
) -> dict[str, dict[str, Any]]:
    """Every server answers every query without errors, and the same data once normalized;
    prism-compiled runs the compiled path on the queries the planner covers (EXPECTED_PATH),
    and says which path answered the others and why."""
    shown: dict[str, dict[str, Any]] = {}
    for query in query_list:
        normal: dict[str, Any] = {}
        execution = None
        for server in running:
            status, answer = post(server.url, query.bodies[server.name], token)
            if status != 200 or not isinstance(answer, dict) or answer.get("errors"):
                raise Mismatch(f"{server.name} {query.name}: HTTP {status}: {answer}")
            normal[server.name] = query.normal[server.name](answer["data"])
            if server.name == "prism-compiled":
                execution = (answer.get("extensions") or {}).get("execution")
                path = (execution or {}).get("path")
                expected = EXPECTED_PATH.get(query.name)
                if expected is not None and path != expected:
                    raise Mismatch(
                        f"prism-compiled {query.name}: ran the {path} path, not {expected} "
                        f"(extensions.execution: {execution})"
                    )
        reference_name = running[0].name
        reference = normal[reference_name]
        rows = query.expected_rows(reference)
        if rows == 0:
            raise Mismatch(f"{query.name}: the answer is empty; the comparison would prove nothing")
        for name, value in normal.items():
            if value != reference:
                raise Mismatch(
                    f"{query.name}: {name} differs from {reference_name}:\n"
                    f"  {reference_name}: {str(reference)[:800]}\n  {name}: {str(value)[:800]}"
                )
        shown[query.name] = {"rows": rows, "servers": sorted(normal)}
        print(f"  {query.name}: {rows} rows, the same from {', '.join(sorted(normal))}")
        if "prism-compiled" in normal:
            shown[query.name]["prism-compiled execution"] = execution
            print(f"    prism-compiled extensions.execution: {execution}")
    return shown


async def register(bench: Any, query_list: list[Query]) -> dict[str, str]:
    """Register the Prism text of the queries, as ``prism operations push`` does; name ->
    sha256 (the hash prism-compiled's requests carry)."""
    from prism.models.registered_operations import register_operations

    documents = list(dict.fromkeys(q.registered for q in query_list))
    async with bench.services.db.transaction(None) as session:
        stored = await register_operations(session, documents)
    return {name: digest for name, digest, _ in stored}


def parse_statements(text: str) -> list[str]:
    """The statements of a PostgreSQL log excerpt (``log_statement = 'all'``)."""
    found: list[str] = []
    current: list[str] | None = None
    for line in text.splitlines():
        entry = LOG_ENTRY.match(line)
        if entry is None:
            if current is not None and line.startswith("\t"):
                current.append(line.strip())
            continue
        if current is not None:
            found.append(" ".join(p for p in current if p))
            current = None
        statement = STATEMENT.match(entry["text"]) if entry["level"] == "LOG" else None
        if statement is not None:
            current = [statement["sql"].strip()]
    if current is not None:
        found.append(" ".join(p for p in current if p))
    return found


# The statement count of the interpreted path must not grow with rows: the nested list is
# also sent with 10x fewer documents (5 documents and 25 sections instead of 50 and 250).
SCALING = ("nested", "documents(first: 50)", "documents(first: 5)")


async def capture_sql(
    bench: Any, query_list: list[Query], running: list[servers.Server], token: str
) -> tuple[dict[str, dict[str, list[str]]], dict[str, Any] | None] | None:
    """The statements each server sends for one request of each query, from the log of the
    embedded PostgreSQL (log_statement = 'all' for the moment, then reset); and prism's
    statement count for the nested list at 50 and at 5 documents."""
    if bench.pgdata is None:
        print("  (PRISM_DATABASE_URL's server: its log is not readable here; skipped)")
        return None
    log = bench.pgdata / "log"
    conn = await bench.owner()
    captured: dict[str, dict[str, list[str]]] = {}

    async def statements_of(url: str, body: dict[str, Any]) -> list[str]:
        """The statements of one request in the steady state (after one like it), or of a
        first-seen one for a first-seen query (its operation under a name of its own)."""
        text = json.dumps(body)
        if FIRST_SEEN in text:
            body = json.loads(text.replace(FIRST_SEEN, f"FirstSeen_count{uuid.uuid4().hex}"))
        else:
            await asyncio.to_thread(post, url, body, token)
        await asyncio.sleep(0.5)
        start = log.stat().st_size
        await asyncio.to_thread(post, url, body, token)
        await asyncio.sleep(0.5)  # the log is written by the backends, asynchronously
        with log.open(errors="replace") as f:
            f.seek(start)
            return parse_statements(f.read())

    scaling = None
    try:
        await conn.execute("ALTER SYSTEM SET log_statement = 'all'")
        await conn.execute("SELECT pg_reload_conf()")
        await asyncio.sleep(1)
        for query in query_list:
            for server in running:
                found = await statements_of(server.url, query.bodies[server.name])
                captured.setdefault(query.name, {})[server.name] = found
        name, many, few = SCALING
        query = next((q for q in query_list if q.name == name), None)
        prism = next((s for s in running if s.name == "prism"), None)
        if query is not None and prism is not None:
            body = dict(query.bodies["prism"])
            body["query"] = body["query"].replace(many, few)
            scaling = {
                "query": name,
                "server": "prism",
                many: len(captured[name]["prism"]),
                few: len(await statements_of(prism.url, body)),
            }
    finally:
        await conn.execute("ALTER SYSTEM RESET log_statement")
        await conn.execute("SELECT pg_reload_conf()")
        await conn.close()
    for query_name, by_server in captured.items():
        counts = ", ".join(f"{s} {len(v)}" for s, v in by_server.items())
        print(f"  {query_name}: {counts}")
    if scaling is not None:
        print(f"  prism nested: {scaling[few]} statements at {few}, {scaling[many]} at {many}")
    return captured, scaling


def tool_versions(bench: Any, pg_version: str) -> dict[str, str]:
    def run(*command: str) -> str:
        try:
            done = subprocess.run(  # noqa: S603
                command, capture_output=True, text=True, timeout=30, check=False
            )
        except OSError:
            return "?"
        # `wrk --version` prints its version with the usage and exits 1.
        lines = (done.stdout or done.stderr).strip().splitlines()
        return lines[0] if lines else "?"

    package = servers.NODE_CACHE / "node_modules" / "postgraphile" / "package.json"
    postgraphile = json.loads(package.read_text())["version"] if package.exists() else "?"
    package5 = servers.NODE_CACHE / "postgraphile5" / "node_modules" / "postgraphile"
    package5 = package5 / "package.json"
    postgraphile5 = json.loads(package5.read_text())["version"] if package5.exists() else "?"
    wrk = shutil.which("wrk")
    wrk_version = run(wrk, "--version").split(" [")[0] if wrk else "?"
    return {
        "PostgreSQL": pg_version + (" (embedded)" if bench.pgdata else ""),
        "Node.js": run(shutil.which("node") or "node", "--version"),
        "PostGraphile": postgraphile,
        "PostGraphile 5": postgraphile5,
        "wrk": wrk_version.removeprefix("wrk "),
    }


async def main(args: argparse.Namespace) -> int:
    print(coverage.describe(coverage.planned_coverage()), flush=True)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    wanted_servers = args.servers.split(",")
    if not args.check_only:
        load.ensure_wrk()
    if "postgraphile" in wanted_servers:
        servers.ensure_postgraphile()
    left_out: dict[str, str] = {}
    if "postgraphile5" in wanted_servers:
        try:
            servers.ensure_postgraphile5()
        except (servers.ServerFailed, subprocess.SubprocessError, OSError) as error:
            left_out["postgraphile5"] = f"not installed: {error}"
            wanted_servers.remove("postgraphile5")
            print(f"postgraphile5 left out: {left_out['postgraphile5']}", flush=True)
    given = " ".join(a for a in sys.argv[1:] if a != "--make")
    if args.make:
        command = "make bench-perf" + (f' PERF_ARGS="{given}"' if given else "")
    else:
        command = ".venv/bin/python -m bench.perf " + given
    with tempfile.TemporaryDirectory(prefix="prism-perf-") as scratch_name:
        scratch = Path(scratch_name)
        async with bench_database(scratch, pool_size=2) as bench:
            print(f"loading {args.documents:,} documents ...", flush=True)
            dataset: Dataset = await generate(
                bench, documents=args.documents, organizations=args.organizations
            )
            print(f"  {dataset.counts} in {dataset.seconds:.1f} s", flush=True)
            conn = await bench.owner()
            pg_version = await conn.fetchval("SHOW server_version")
            await conn.close()
            from prism.db.engine import url_for_asyncpg

            url = url_for_asyncpg(bench.url)
            factories = {
                "prism": lambda: servers.prism_server(url, scratch, workers=args.workers),
                "prism-compiled": lambda: servers.prism_compiled_server(
                    url, scratch, workers=args.workers
                ),
                "postgraphile": lambda: servers.postgraphile_server(url, dataset, scratch),
                "postgraphile5": lambda: servers.postgraphile5_server(url, dataset, scratch),
                "raw": lambda: servers.raw_server(
                    url, dataset, scratch, plan=None if args.no_limit else plan_file
                ),
            }
            plan_file = scratch / "limit-plan.json"
            running = [factories[name]() for name in wanted_servers]
            query_list = [q for q in queries(dataset) if q.name in args.queries.split(",")]
            registered = None
            if "prism-compiled" in wanted_servers:
                registered = await register(bench, query_list)
                print(f"  registered: {', '.join(registered)}", flush=True)
            bodies = scratch / "bodies"
            bodies.mkdir()
            for query in query_list:
                for name, body in query.bodies.items():
                    (bodies / f"{query.name}-{name}.json").write_text(json.dumps(body))
            runs: list[load.Run] = []
            statements = scaling = None
            summary: list[dict[str, Any]] | None = None
            checked: dict[str, dict[str, Any]] = {}
            chosen: dict[str, Any] | None = None
            # The raw server starts last: it serves the statements chosen with the others up.
            first = [s for s in running if s.name != "raw"]
            try:
                for server in first:
                    server.start()
                for server in first:
                    try:
                        server.wait_ready()
                    except servers.ServerFailed as error:
                        if server.name != "postgraphile5":
                            raise
                        # PostGraphile 5 is a guest: where it does not run, it is left out.
                        left_out[server.name] = str(error)
                        server.stop()
                        running.remove(server)
                        print(f"postgraphile5 left out: {error}", flush=True)
                        continue
                    print(f"{server.name} ready at {server.url} (pid {server.pid})", flush=True)
                raw_server = next((s for s in running if s.name == "raw"), None)
                if raw_server is not None:
                    if not args.no_limit:
                        print("choosing the physical limit's statements ...", flush=True)
                        pgs = [s for s in running if s.name.startswith("postgraphile")]
                        chosen = await limit.choose(
                            bench, url, dataset, query_list, pgs, post, args.limit_repeat
                        )
                        write_json(plan_file, limit.raw_plan(chosen))
                    raw_server.start()
                    raw_server.wait_ready()
                    print(f"raw ready at {raw_server.url} (pid {raw_server.pid})", flush=True)
                print("checking that every server returns the same data ...", flush=True)
                checked = check_answers(query_list, running, dataset.token)
                print("counting SQL statements per request ...", flush=True)
                captured = await capture_sql(bench, query_list, running, dataset.token)
                if captured is not None:
                    statements, scaling = captured
                started = time.monotonic()
                for query in query_list if not args.check_only else []:
                    for concurrency in concurrencies:
                        runs += await asyncio.to_thread(
                            measure, args, query, concurrency, running, bodies, dataset, bench
                        )
                        print(f"  ({time.monotonic() - started:.0f} s)", flush=True)
                if args.profile and not args.check_only:
                    summary = run_profile(args, running, query_list, bodies, dataset)
            finally:
                for server in running:
                    server.stop()
            env = environment()
            tools = tool_versions(bench, pg_version)
    write_results(
        args,
        env,
        command,
        dataset,
        tools,
        query_list,
        runs,
        statements,
        summary,
        checks={
            "answers": checked,
            "registered": registered,
            "statement_scaling": scaling,
            "left_out": left_out,
        },
        chosen=chosen,
    )
    # A wrong or failed answer fails the run; timeouts and socket errors under overload are
    # figures (reported in perf.md).
    return 1 if any(r.bad_answers for r in runs) else 0


def measure(
    args: argparse.Namespace,
    query: Query,
    concurrency: int,
    running: list[servers.Server],
    bodies: Path,
    dataset: Dataset,
    bench: Any,
) -> list[load.Run]:
    """Each server warmed up, then measured in ``args.rounds`` rounds that take turns (the
    order reversed every other round), so that a change in the machine's load while they run
    weighs on all of them alike."""

    def body(server: servers.Server) -> Path:
        return bodies / f"{query.name}-{server.name}.json"

    if args.warmup > 0:
        for server in running:
            load.wrk(
                server.url,
                body(server),
                dataset.token,
                concurrency=concurrency,
                seconds=args.warmup,
            )
    samples: dict[str, list[load.Sample]] = {server.name: [] for server in running}
    for round_number in range(args.rounds):
        order = running if round_number % 2 == 0 else running[::-1]
        for server in order:
            samples[server.name].append(
                load.sample(
                    url=server.url,
                    pid=server.pid,
                    db_pid=bench.postmaster_pid,
                    body=body(server),
                    token=dataset.token,
                    concurrency=concurrency,
                    seconds=args.seconds / args.rounds,
                )
            )
    runs = []
    for server in running:
        run = load.aggregate(server.name, query.name, concurrency, samples[server.name])
        runs.append(run)
        cpu = "–" if run.cpu_ms_per_req is None else f"{run.cpu_ms_per_req:.2f}"
        others = "–" if run.other_cpus is None else f"{run.other_cpus:.2f}"
        print(
            f"{query.name:8} c={concurrency:<3} {server.name:12} {run.rps:8.1f} req/s  "
            f"p50 {run.p50_ms:7.2f} ms  p99 {run.p99_ms:7.2f} ms  CPU {cpu} ms/req  "
            f"RSS {run.rss_mb:4.0f} MB  other load {others} CPUs  bad {run.bad_answers}",
            flush=True,
        )
    return runs


def run_profile(
    args: argparse.Namespace,
    running: list[servers.Server],
    query_list: list[Query],
    bodies: Path,
    dataset: Dataset,
) -> list[dict[str, Any]] | None:
    """A py-spy profile of each server of --profile-servers (Prism's processes) under the
    query, one after the other."""
    py_spy = profile.find_py_spy()
    query = next((q for q in query_list if q.name == args.profile_query), None)
    if py_spy is None or query is None:
        print("profile skipped: needs py-spy (see bench/perf/profile.py) and the query")
        return None
    summaries = []
    for name in args.profile_servers.split(","):
        server = next((s for s in running if s.name == name), None)
        if server is None:
            print(f"profile of {name} skipped: not running")
            continue
        print(f"profiling {name} on {query.name} for {args.profile} s ...", flush=True)
        summaries.append(
            profile.record(
                py_spy=py_spy,
                pid=server.pid,
                url=server.url,
                body=bodies / f"{query.name}-{name}.json",
                token=dataset.token,
                concurrency=10,
                seconds=args.profile,
                output=args.results_dir / f"perf-profile-{name}.folded.txt",
            )
            | {"query": query.name, "server": name}
        )
    return summaries or None


def write_results(
    args: argparse.Namespace,
    env: dict[str, Any],
    command: str,
    dataset: Dataset,
    tools: dict[str, str],
    query_list: list[Query],
    runs: list[load.Run],
    statements: dict[str, dict[str, list[str]]] | None,
    summary: list[dict[str, Any]] | None,
    checks: dict[str, Any],
    chosen: dict[str, Any] | None = None,
) -> None:
    results = args.results_dir
    results.mkdir(parents=True, exist_ok=True)
    concurrency = int(args.concurrency.split(",")[0])
    parameters = {
        "documents": args.documents,
        "organizations": args.organizations,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "servers": args.servers,
        "queries": args.queries,
        "workers": args.workers,
        "check_only": args.check_only,
        "limit_repeat": args.limit_repeat,
        "no_limit": args.no_limit,
    }
    document = {
        "command": command,
        "environment": env,
        "tools": tools,
        "parameters": parameters,
        "dataset": dataset.as_json(),
        "queries": {q.name: {"description": q.description, **q.bodies} for q in query_list},
        "statements_per_request": report.sql_rows(statements) if statements else None,
        "checks": checks,
        "runs": [r.as_json() for r in runs],
        "profile": summary,
        "limit": chosen,
        "coverage": coverage.planned_coverage(),
    }
    write_json(results / f"{args.output}.json", document)
    (results / f"{args.output}.md").write_text(report.render(document))
    write_json(results / "latest.json", report.latest(runs, concurrency))
    written = [f"{args.output}.md", f"{args.output}.json", "latest.json"]
    if statements:
        (results / "perf-sql.md").write_text(report.sql_markdown(statements, env["commit"]))
        written.append("perf-sql.md")
    print("written: " + ", ".join(common.shown(results / w) for w in written))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.perf",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
        parents=[common.results_options()],
    )
    p.add_argument("--documents", type=int, default=10_000, help="documents in all (10000)")
    p.add_argument("--organizations", type=int, default=4, help="organizations (4)")
    p.add_argument(
        "--seconds", type=float, default=15, help="measured seconds per server and run (15)"
    )
    p.add_argument("--warmup", type=float, default=3, help="warm-up seconds per run (3)")
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="the measured seconds are split into rounds, servers taking turns (3)",
    )
    p.add_argument(
        "--concurrency",
        default="10,50",
        help="connections, a list; the first goes to latest.json (10,50)",
    )
    p.add_argument(
        "--servers",
        default="prism,prism-compiled,postgraphile,postgraphile5,raw",
        help="a list (all five; the first is the reference of the equality check; "
        "postgraphile5 is left out, with the reason, where it does not run)",
    )
    p.add_argument(
        "--queries",
        default="nested,node,filtered,viewer,nested-text,viewer-new",
        help="a list (all six)",
    )
    p.add_argument(
        "--limit-repeat",
        type=int,
        default=50,
        help="EXPLAIN ANALYZE runs of each candidate statement of the physical limit (50)",
    )
    p.add_argument(
        "--no-limit",
        action="store_true",
        help="the raw server sends Prism's interpreted statements (the limit before issue 16)",
    )
    p.add_argument(
        "--coverage",
        action="store_true",
        help="only print the compiled planner's coverage of the contract's read fields",
    )
    p.add_argument("--workers", type=int, default=1, help="PRISM_WORKERS of prism serve (1)")
    p.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="SECONDS",
        help="then profile Prism's servers with py-spy for SECONDS each (0: no profile)",
    )
    p.add_argument("--profile-query", default="nested", help="the query profiled (nested)")
    p.add_argument(
        "--profile-servers",
        default="prism,prism-compiled",
        help="the servers profiled, a list (prism,prism-compiled)",
    )
    p.add_argument(
        "--check-only",
        action="store_true",
        help="no load: load the data, start the servers, check their answers and count the "
        "SQL, write the results without runs (needs no wrk)",
    )
    p.add_argument("--output", default="perf", help="results name: bench/results/NAME.md|json")
    p.add_argument(
        "--render",
        action="store_true",
        help="only rewrite NAME.md (keeping its analysis block) and latest.json from "
        "bench/results/NAME.json",
    )
    p.add_argument("--make", action="store_true", help=argparse.SUPPRESS)
    return p


def render_only(args: argparse.Namespace) -> int:
    """Rewrite NAME.md from NAME.json, keeping the hand-written analysis of the current NAME.md
    (between ``<!-- analysis -->`` and ``<!-- /analysis -->``); a new run drops it, since it
    describes the figures it replaces."""
    document = read_json(args.results_dir / f"{args.output}.json")
    markdown = args.results_dir / f"{args.output}.md"
    analysis = report.analysis_of(markdown.read_text()) if markdown.exists() else None
    markdown.write_text(report.render(document, analysis))
    concurrency = int(str(document["parameters"]["concurrency"]).split(",")[0])
    runs = [load.Run(**run) for run in document["runs"]]
    write_json(args.results_dir / "latest.json", report.latest(runs, concurrency))
    print(f"rendered {args.output}.md and latest.json from {args.output}.json")
    return 0


if __name__ == "__main__":
    arguments = parser().parse_args()
    if arguments.coverage:
        sys.exit(coverage.main())
    if arguments.render:
        sys.exit(render_only(arguments))
    sys.exit(asyncio.run(main(arguments)))
