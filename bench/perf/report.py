"""The results: ``bench/results/perf.md`` (tables per query), ``perf.json`` (everything) and
``latest.json`` (the c=10 figures, shaped ``{query: {server: {rps, p50_ms, p99_ms,
cpu_ms_per_req, concurrency}}}``)."""

from __future__ import annotations

import re
from typing import Any

from bench.common import fmt, markdown_table
from bench.perf.load import Run

SERVERS = ("prism", "prism-compiled", "postgraphile", "postgraphile5", "raw")
SERVER_NOTES = {
    "prism": "`prism serve` of this checkout: uvicorn, 1 worker (`PRISM_WORKERS=1`), production "
    "mode, log level WARNING, every request authenticated by its API token; sent the query "
    "text, so it runs the interpreted path",
    "prism-compiled": "the same `prism serve` in a second process of its own (same settings, "
    "plus `PRISM_RESPONSE_CACHE_TTL_SECONDS=0` and `PRISM_COMPILED_OPERATIONS=true`), sent "
    "the same operations registered at set-up, by their sha256 "
    "(`extensions.persistedQuery`): the compiled path, one SQL statement building the answer, "
    "where the planner covers the query (see the execution paths below); the response cache "
    "is off, so every request runs the statement",
    "postgraphile": "PostGraphile 4.14 (npm) in library mode on Node's http server "
    "(`bench/perf/postgraphile.js`); `pgSettings` sets role `prism_app` and `prism.org_id` per "
    "request; the token is checked by a map lookup",
    "postgraphile5": "PostGraphile 5 (Grafast; npm, pinned by `bench/perf/postgraphile5/"
    "package-lock.json`) configured as 4.14 through its V4 preset (`bench/perf/postgraphile5/"
    "server.js`): the same options, GraphQL names, `pgSettings` and token map; on Node < 22 "
    "with `Promise.withResolvers` polyfilled (`--require polyfill.cjs`)",
    "raw": "the physical limit: Starlette + asyncpg + orjson (`bench/perf/raw_app.py`), each "
    "query answered by the fastest single statement PostgreSQL runs for it (prism-compiled's "
    "or PostGraphile's, chosen below) in one REPEATABLE READ transaction per request as "
    "`prism_app` with `prism.org_id` set; PostGraphile's rows reshaped into Prism's answer in "
    "Python; queries without a single-statement candidate keep Prism's interpreted "
    "statements; no GraphQL; the token is resolved once, then a dictionary lookup",
}
TARGET_RATIO = 0.5
TARGET_P99_MS = 100.0
TARGET_RSS_MB = 300.0
# Issue 9: the compiled nested list against PostGraphile and the limit.
TARGET_COMPILED_PG = 1.5
TARGET_COMPILED_RAW = 0.5
TARGET_COMPILED_P99_MS = 40.0


def latest(runs: list[Run], concurrency: int) -> dict[str, dict[str, dict[str, Any]]]:
    """latest.json: the figures at one concurrency, in the shape issue 8 fixes."""
    shaped: dict[str, dict[str, dict[str, Any]]] = {}
    for run in runs:
        if run.concurrency != concurrency:
            continue
        shaped.setdefault(run.query, {})[run.server] = {
            "rps": round(run.rps, 1),
            "p50_ms": round(run.p50_ms, 2),
            "p99_ms": round(run.p99_ms, 2),
            "cpu_ms_per_req": None if run.cpu_ms_per_req is None else round(run.cpu_ms_per_req, 3),
            "concurrency": run.concurrency,
        }
    return shaped


def _rps(runs: list[Run], query: str, server: str, concurrency: int) -> float | None:
    for run in runs:
        if (run.query, run.server, run.concurrency) == (query, server, concurrency):
            return run.rps
    return None


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return value / reference


def query_rows(runs: list[Run], query: str) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        if run.query != query:
            continue
        pg = _rps(runs, query, "postgraphile", run.concurrency)
        raw = _rps(runs, query, "raw", run.concurrency)
        rows.append(
            {
                "server": run.server,
                "c": run.concurrency,
                "req/s": run.rps,
                "p50 ms": run.p50_ms,
                "p99 ms": run.p99_ms,
                "CPU ms/req": run.cpu_ms_per_req,
                "PostgreSQL CPU ms/req": run.db_cpu_ms_per_req,
                "peak RSS MB": run.rss_mb,
                "KiB/answer": run.kib_per_answer,
                "other load (CPUs)": run.other_cpus,
                "bad / timeouts": f"{run.bad_answers} / {run.timeouts + run.socket_errors}",
                "× PostGraphile": _ratio(run.rps, pg),
                "× raw": _ratio(run.rps, raw),
            }
        )
    return rows


def _cpu(runs: list[Run], query: str, server: str, concurrency: int) -> float | None:
    for run in runs:
        if (run.query, run.server, run.concurrency) == (query, server, concurrency):
            return run.cpu_ms_per_req
    return None


def _run(runs: list[Run], query: str, server: str, concurrency: int) -> Run | None:
    for run in runs:
        if (run.query, run.server, run.concurrency) == (query, server, concurrency):
            return run
    return None


def summary_rows(runs: list[Run], queries: list[str], concurrency: int) -> list[dict[str, Any]]:
    present = [s for s in SERVERS if any(r.server == s for r in runs)]
    rows = []
    for query in queries:
        figures = {s: _rps(runs, query, s, concurrency) for s in present}
        cpu = {s: _cpu(runs, query, s, concurrency) for s in present}
        row: dict[str, Any] = {"query": query, **{f"{s} req/s": figures[s] for s in present}}
        for s in ("prism", "prism-compiled"):
            if s in present:
                row[f"{s} ÷ PostGraphile"] = _ratio(figures[s], figures.get("postgraphile"))
                row[f"{s} ÷ raw"] = _ratio(figures[s], figures.get("raw"))
        row["CPU ms/req " + " · ".join(present)] = " · ".join(fmt(cpu[s]) for s in present)
        rows.append(row)
    return rows


def _verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else "**not met**")


def targets(
    runs: list[Run], concurrency: int, scaling: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Issue 8's targets, checked on this run's figures for Prism's interpreted path."""
    prism = [r for r in runs if r.server == "prism"]
    nested_ratio = _ratio(
        _rps(runs, "nested", "prism", concurrency),
        _rps(runs, "nested", "postgraphile", concurrency),
    )
    # None when prism did not run (--servers without it, or --check-only: no runs at all)
    worst_p99 = max(
        (r for r in prism if r.concurrency == concurrency), key=lambda r: r.p99_ms, default=None
    )
    prisms = [r for r in runs if r.server in ("prism", "prism-compiled")]
    largest = max(prisms, key=lambda r: r.rss_mb, default=None)
    rows = [
        {
            "target": f"nested list: Prism (interpreted) ≥ {TARGET_RATIO}× PostGraphile's req/s "
            f"(c={concurrency})",
            "this run": f"{fmt(nested_ratio)}×" if nested_ratio is not None else "–",
            "verdict": _verdict(None if nested_ratio is None else nested_ratio >= TARGET_RATIO),
        },
    ]
    if scaling:
        counts = {k: v for k, v in scaling.items() if k not in ("query", "server")}
        shown = ", ".join(f"{v} statements at `{k}`" for k, v in counts.items())
        rows.append(
            {
                "target": "no query's SQL statement count grows with rows",
                "this run": f"{scaling['server']} {scaling['query']}: {shown} (10× the rows); "
                "every query's count is below",
                "verdict": _verdict(len(set(counts.values())) == 1),
            }
        )
    rows += [
        {
            "target": f"p99 at c={concurrency} < {TARGET_P99_MS:.0f} ms (every query, prism)",
            "this run": "–"
            if worst_p99 is None
            else f"worst {fmt(worst_p99.p99_ms)} ms ({worst_p99.query})",
            "verdict": _verdict(None if worst_p99 is None else worst_p99.p99_ms < TARGET_P99_MS),
        },
        {
            "target": f"RSS per worker < {TARGET_RSS_MB:.0f} MB",
            "this run": "–"
            if largest is None
            else f"peak {fmt(largest.rss_mb)} MB ({largest.server}, {largest.query}, "
            f"c={largest.concurrency})",
            "verdict": _verdict(None if largest is None else largest.rss_mb < TARGET_RSS_MB),
        },
    ]
    return rows


def compiled_targets(runs: list[Run], concurrency: int) -> list[dict[str, Any]]:
    """Issue 9's targets, on prism-compiled's nested list."""
    nested = _run(runs, "nested", "prism-compiled", concurrency)
    if nested is None:
        return []
    pg = _ratio(nested.rps, _rps(runs, "nested", "postgraphile", concurrency))
    raw = _ratio(nested.rps, _rps(runs, "nested", "raw", concurrency))
    return [
        {
            "target": f"nested list compiled ≥ {TARGET_COMPILED_PG}× PostGraphile's req/s "
            f"(c={concurrency})",
            "this run": "–" if pg is None else f"{fmt(pg)}×",
            "verdict": _verdict(None if pg is None else pg >= TARGET_COMPILED_PG),
        },
        {
            "target": f"nested list compiled ≥ {TARGET_COMPILED_RAW}× the raw limit's req/s "
            f"(c={concurrency})",
            "this run": "–" if raw is None else f"{fmt(raw)}×",
            "verdict": _verdict(None if raw is None else raw >= TARGET_COMPILED_RAW),
        },
        {
            "target": f"nested list compiled: p99 at c={concurrency} < "
            f"{TARGET_COMPILED_P99_MS:.0f} ms",
            "this run": f"{fmt(nested.p99_ms)} ms",
            "verdict": _verdict(nested.p99_ms < TARGET_COMPILED_P99_MS),
        },
    ]


def execution_rows(answers: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for query, checked in answers.items():
        if "prism-compiled execution" not in checked:
            continue
        execution = checked["prism-compiled execution"] or {}
        rows.append(
            {
                "query": query,
                "extensions.execution.path": execution.get("path", "–"),
                "reason": execution.get("reason", ""),
            }
        )
    return rows


def limit_rows(chosen: dict[str, Any]) -> list[dict[str, Any]]:
    """The physical limit: per query, each candidate's time and the choice."""
    rows = []
    for query, found in chosen.items():
        times = {c["source"]: c for c in found["candidates"]}
        best = (found.get("chosen") or {}).get("source")
        row: dict[str, Any] = {"query": query, "chosen": best or "Prism's interpreted statements"}
        for source in ("prism-compiled", "postgraphile", "postgraphile5"):
            c = times.get(source)
            row[f"{source} ms (EXPLAIN · round trip)"] = (
                f"{fmt(c['explain_ms'])} · {fmt(c['round_trip_ms'])}"
                if c
                else "– " + (found["missing"].get(source) or "not run")
            )
        row["why"] = found["reason"]
        rows.append(row)
    return rows


def coverage_lines(coverage: dict[str, Any]) -> list[str]:
    lines = [
        f"**planned coverage: {coverage['planned']} of {coverage['fields']} read fields** "
        f"(principal: {coverage['principal']}; `python -m bench.perf --coverage`, "
        "`bench/perf/coverage.py`: every field reachable from `Query` that maps to rows, "
        "probed with the compiled planner itself). Not planned:",
        "",
    ]
    for label, why in coverage["not_planned"].items():
        shown = "not in the planner's tables" if why == label else why
        lines.append(f"- `{label}`: {shown}")
    return lines


def _other_load(runs: list[Run], env: dict[str, Any]) -> str:
    loads = [r.other_cpus for r in runs if r.other_cpus is not None]
    if not loads:
        return "."
    return (
        f"; other processes kept {sum(loads) / len(loads):.2f} of the {env['cpus_usable']} "
        f"CPUs busy on average during the runs ({min(loads):.2f}–{max(loads):.2f})."
    )


def sql_rows(statements: dict[str, dict[str, list[str]]]) -> list[dict[str, Any]]:
    rows = []
    for query, by_server in statements.items():
        rows.append({"query": query, **{s: len(v) for s in SERVERS if (v := by_server.get(s))}})
    return rows


def markdown(
    *,
    env: dict[str, Any],
    command: str,
    parameters: dict[str, Any],
    dataset: dict[str, Any],
    tools: dict[str, str],
    descriptions: dict[str, str],
    runs: list[Run],
    sql_counts: list[dict[str, Any]] | None,
    concurrency: int,
    title: str,
    checks: dict[str, Any] | None = None,
    chosen: dict[str, Any] | None = None,
    coverage: dict[str, Any] | None = None,
) -> str:
    checks = checks or {}
    queries = list(dict.fromkeys(r.query for r in runs))
    present = [s for s in SERVERS if any(r.server == s for r in runs)]
    dirty = (
        f" + uncommitted `prism/` changes (diff {env['prism_diff_sha256']})"
        if env["prism_dirty"]
        else ", no local changes to `prism/`"
    )
    lines = [
        f"# {title}",
        "",
        "Issues 8, 9 and 16: Prism (its interpreted path, and its compiled path for registered "
        "operations) beside PostGraphile (4.14 and 5) and the physical limit, each one process on "
        "127.0.0.1, on the same PostgreSQL and the same rows, driven by `wrk` over loopback. "
        "Figures of one run: compare the ratios (measured minutes apart on the same machine), "
        "not the absolute numbers, which move with whatever else runs on the machine.",
        "",
        f"- **Command:** `{command}`",
        f"- **Recorded:** {env['date']}, commit `{env['commit']}`{dirty}.",
        f"- **Machine:** {env['cpu']}, {env['cpus_usable']} CPUs usable, "
        f"{env['memory_gib']} GiB, {env['platform']}, Python {env['python']}, "
        + ", ".join(f"{k} {v}" for k, v in tools.items())
        + ".",
        f"- **Load average (1 min):** {env['loadavg_1m_start']:.2f} at the start, "
        f"{env['loadavg_1m_end']:.2f} at the end (the benchmark itself keeps about 2 busy)"
        + _other_load(runs, env),
        "- **Data:** "
        + ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in dataset["counts"].items())
        + f"; loaded with COPY in {dataset['seconds']:.1f} s. The principal is an ADMIN user's "
        "API token (every scope) with CONFIDENTIAL clearance; every document is at most "
        "CONFIDENTIAL and none is deleted, so all servers see the same rows, nothing is "
        "masked, and no read is of RESTRICTED content (which Prism audits with a write).",
        "- **Method:** per query and concurrency, each server gets "
        f"{parameters['warmup']:g} s of warm-up, then {parameters['seconds']:g} s measured in "
        f"{parameters['rounds']} rounds of {parameters['seconds'] / parameters['rounds']:g} s "
        "in which the servers take turns (order reversed every other round), so a change in "
        "the machine's load weighs on all of them alike. Load: `wrk -t1 --latency` with a Lua "
        "script posting the JSON body with the bearer token; an answer that is not 200 or "
        "carries `errors` counts as bad; latency percentiles merge the rounds' distributions. "
        "CPU ms/req: the server process tree's user + system CPU time (psutil) divided by the "
        "requests; PostgreSQL CPU likewise for the postmaster's tree. Peak RSS: the largest "
        "resident size of one server process, sampled every 0.2 s. Other load: CPUs busy on "
        "the machine during the run beyond the server, PostgreSQL and the load generator "
        "(other people's work on a shared machine). Before timing, every server's answer to "
        "every query was reduced to ids, names and orders and found equal, and "
        "prism-compiled's `extensions.execution` checked (below).",
        "- **Files:** `latest.json` holds the c="
        f"{concurrency} figures in the shape issue 8 fixes (`{{query: {{server: {{rps, p50_ms, "
        "p99_ms, cpu_ms_per_req, concurrency}}}`); `perf.json` holds every run at every "
        "concurrency (under `runs`), with memory, the data set and the environment; "
        "`perf-sql.md` the SQL each server sent for one request of each query.",
        "",
        "## Servers",
        "",
        *[f"- **{s}**: {SERVER_NOTES[s]}." for s in present],
        "",
        f"## Summary: req/s at c={concurrency}",
        "",
        markdown_table(summary_rows(runs, queries, concurrency)),
        "",
        "## Targets of issue 8 (Prism's interpreted path, this run)",
        "",
        markdown_table(targets(runs, concurrency, checks.get("statement_scaling"))),
        "",
    ]
    compiled = compiled_targets(runs, concurrency)
    if compiled:
        lines += [
            "## Targets of issue 9 (the compiled path, this run)",
            "",
            markdown_table(compiled),
            "",
        ]
    left_out = checks.get("left_out") or {}
    if left_out:
        lines += ["## Servers left out", ""]
        lines += [f"- **{name}**: `{why[:600]}`" for name, why in left_out.items()]
        lines.append("")
    if chosen:
        lines += [
            "## The physical limit: the statement chosen per query",
            "",
            "Candidates: prism-compiled's statement (Prism's compiled planner on the registered "
            "operation, for the benchmark's principal and request) and each PostGraphile's one "
            "data statement (captured with its values while it answered the same request; "
            "none when it sent several). Each timed on the same data as `prism_app` with "
            "`prism.org_id` set, in one transaction: the median of "
            f"{(parameters.get('limit_repeat') or '?')} EXPLAIN (ANALYZE, TIMING OFF) execution "
            "times decides; the median round trip from asyncpg is shown beside it. The raw "
            "server answers each query with the chosen statement (`bench/perf/limit.py`).",
            "",
            markdown_table(limit_rows(chosen)),
            "",
        ]
    if coverage:
        lines += ["## Planned coverage of the compiled path", "", *coverage_lines(coverage), ""]
    execution = execution_rows(checks.get("answers") or {})
    if execution:
        lines += [
            "## prism-compiled: which path answered",
            "",
            "`extensions.execution` of prism-compiled's answer to each query, checked before "
            "timing (the run stops if a query the planner covers is not compiled).",
            "",
            markdown_table(execution),
            "",
        ]
    if sql_counts:
        lines += [
            "## SQL statements per request",
            "",
            "Counted in PostgreSQL's log (`log_statement = 'all'`, one request at a time, before "
            "the timed runs), transaction control and connection checks included; Prism's "
            "count includes the authentication of the request's token.",
            "",
            markdown_table(sql_counts),
            "",
        ]
    for query in queries:
        lines += [
            f"## `{query}`: {descriptions.get(query, '')}",
            "",
            markdown_table(query_rows(runs, query)),
            "",
        ]
    bad = [r for r in runs if r.bad_answers or r.socket_errors or r.timeouts]
    if bad:
        lines += ["## Bad answers, timeouts (10 s) and socket errors", ""]
        lines += [
            f"- {r.server} {r.query} c={r.concurrency}: {r.bad_answers} bad answers, "
            f"{r.timeouts} timeouts, {r.socket_errors} socket errors"
            + (f"; first bad answer: `{r.bad_sample[:200]}`" if r.bad_sample else "")
            for r in bad
        ]
        lines.append("")
    return "\n".join(lines)


def sql_markdown(statements: dict[str, dict[str, list[str]]], commit: str) -> str:
    lines = [
        "# SQL per request, by server and query",
        "",
        f"Captured at commit `{commit}` by `python -m bench.perf` with PostgreSQL's "
        "`log_statement = 'all'`, one request at a time. Parameters are left out. The raw "
        "server (`bench/perf/raw_app.py`, the physical limit) sends the statement chosen for "
        "the query (perf.md), or Prism's read statements where none was, without Prism's "
        "per-request authentication (it resolves the token once).",
        "",
    ]
    for query, by_server in statements.items():
        lines += [f"## `{query}`", ""]
        for server in SERVERS:
            found = by_server.get(server)
            if found is None:
                continue
            lines += [f"### {server}: {len(found)} statements", "", "```sql"]
            lines += [s.rstrip() + ";" if not s.rstrip().endswith(";") else s for s in found]
            lines += ["```", ""]
    return "\n".join(lines)


TITLE = "Performance: Prism, PostGraphile and the raw-SQL limit"
# A hand-written analysis between these markers, just under the title, survives --render.
ANALYSIS = re.compile(r"<!-- analysis -->\n.*?<!-- /analysis -->\n", re.DOTALL)


def analysis_of(markdown_text: str) -> str | None:
    """The analysis block of a perf.md, markers included, if it has one."""
    found = ANALYSIS.search(markdown_text)
    return found.group(0) if found else None


def render(document: dict[str, Any], analysis: str | None = None) -> str:
    """perf.md from the perf.json document (``python -m bench.perf --render`` redoes it),
    with ``analysis`` (a block between the markers) under the title."""
    parameters = document["parameters"]
    runs = [Run(**run) for run in document["runs"]]
    text = markdown(
        env=document["environment"],
        command=document["command"],
        parameters=parameters,
        dataset=document["dataset"],
        tools=document["tools"],
        descriptions={q: v["description"] for q, v in document["queries"].items()},
        runs=runs,
        sql_counts=document.get("statements_per_request"),
        concurrency=int(str(parameters["concurrency"]).split(",")[0]),
        title=TITLE,
        checks=document.get("checks"),
        chosen=document.get("limit"),
        coverage=document.get("coverage"),
    )
    if analysis:
        head, _, rest = text.partition("\n\n")
        text = f"{head}\n\n{analysis}\n{rest}"
    profiles = document.get("profile") or []
    if isinstance(profiles, dict):  # one profile, of prism (before prism-compiled existed)
        profiles = [profiles | {"server": profiles.get("server", "prism")}]
    for summary in profiles:
        header = [
            f"## Profile: where {summary['server']}'s CPU goes on `{summary['query']}`",
            "",
        ]
        text += "\n" + profile_markdown(summary, header)
    return text


def _schedule_note(summary: dict[str, Any]) -> str:
    """How much of the samples is time on a CPU, from the kernel's scheduler statistics."""
    on_cpu, waiting = summary.get("on_cpu_s"), summary.get("runqueue_wait_s")
    if on_cpu is None or waiting is None:
        return " The shares are of the time the process was runnable."
    sampled = summary["samples"] / summary["rate_hz"]
    return (
        f" Meanwhile the kernel counted {on_cpu:.1f} s of the process's main thread (the "
        f"event loop) on a CPU and "
        f"{waiting:.1f} s waiting in the run queue for one (of {summary['seconds']} s): py-spy "
        "counts a runnable thread as active whether it runs or waits, so the "
        f"{sampled:.1f} s of samples are about {100 * on_cpu / max(on_cpu + waiting, 1e-9):.0f} % "
        "CPU time and the rest waiting for a CPU, charged to the frame the process was in "
        "at the time: read the shares as approximate, and CPU ms/req in the tables above as "
        "the measure of cost."
    )


def profile_markdown(summary: dict[str, Any], header: list[str]) -> str:
    def table(key: str) -> str:
        return markdown_table(
            [{"where": r["where"], "%": r["%"], "samples": r["samples"]} for r in summary[key]]
        )

    wrk = summary.get("wrk") or {}
    requests = wrk.get("requests")
    lines = [
        *header,
        f"py-spy, {summary['rate_hz']} Hz for {summary['seconds']} s, "
        f"{summary['samples']:,} samples of the busy `prism serve` process "
        f"({summary['server']}) while wrk drove the "
        f"query at c={summary['concurrency']}"
        + (f" ({requests:,} requests)" if requests else "")
        + ". Idle time (waiting on the network and PostgreSQL) is not sampled."
        + _schedule_note(summary),
        "",
        f"### {summary['server']}: by phase of the request (the innermost phase on the stack)",
        "",
        table("by_phase"),
        "",
        f"### {summary['server']}: by layer (the innermost frame of a known package)",
        "",
        table("by_layer"),
        "",
        f"### {summary['server']}: functions by self time (top)",
        "",
        table("self_by_function"),
        "",
        f"### {summary['server']}: Prism's functions by inclusive time (top)",
        "",
        table("prism_inclusive"),
        "",
    ]
    return "\n".join(lines)
