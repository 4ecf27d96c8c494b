"""The benchmarks keep running: each one end to end at a tiny size, by the command line its
Makefile target or bench/README.md gives (``python bench/<name>.py``, ``python -m
bench.perf``), on a database of its own on the test PostgreSQL server (PRISM_DATABASE_URL:
created, then dropped), writing its report into a temporary directory, never into
bench/results/. The figures are measurements and are not checked; that each report is
written with the tables its benchmark makes, and the checks the benchmarks make themselves
(rollups equal to base tables, every server's answer equal), are. Parts that need tools Prism
does not ship with (wrk, Node.js and PostGraphile, py-spy) are left out, not faked.

And the benchmarks use public names only: no private name of prism or of another module
crosses a module boundary, so a refactoring in prism breaks them in these tests."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"

Run = Callable[..., dict[str, Any]]


def results_state() -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in RESULTS.rglob("*") if p.is_file()}


@pytest.fixture
def run_bench(server_url: str, tmp_path: Path) -> Run:
    """Run a benchmark's command line; the JSON document it wrote to --results-dir."""

    def run(*arguments: str, report: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        results = tmp_path / "results"
        before = results_state()
        done = subprocess.run(
            [sys.executable, *arguments, "--results-dir", str(results)],
            cwd=ROOT,
            env={**os.environ, "PRISM_DATABASE_URL": server_url, **(env or {})},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        output = f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
        assert done.returncode == 0, output
        assert results_state() == before, "a benchmark wrote into bench/results/"
        path = results / report
        assert path.exists(), f"{report} not written; {output}"
        document: dict[str, Any] = json.loads(path.read_text())
        return document

    return run


def tables(document: dict[str, Any], *sparse: str) -> dict[str, list[dict[str, Any]]]:
    """The report's tables, each with rows (but those named in ``sparse``)."""
    found: dict[str, list[dict[str, Any]]] = document["tables"]
    assert found, "the report has no tables"
    for caption, rows in found.items():
        assert rows or caption in sparse, f"the table {caption!r} is empty"
    return found


# --- bench/ingest.py ---------------------------------------------------------------------------


def test_extraction_benchmark_times_isolated_and_in_process_extraction(run_bench: Run) -> None:
    document = run_bench(
        "bench/ingest.py",
        "extraction",
        *("--docs", "2", "--pages", "1", "--concurrency", "1", "--cli-docs", "0"),
        *("--repeat", "1"),
        report="ingest-extraction.json",
    )
    modes = [row["mode"] for row in tables(document)["Throughput"]]
    assert modes == ["in-process extract_file", "isolated extract_isolated"]
    assert all(row["docs"] == 2 for row in document["tables"]["Throughput"])


def test_analysis_benchmark_times_the_rules_and_the_pii_scan(run_bench: Run) -> None:
    document = run_bench(
        "bench/ingest.py", "analysis", "--sections", "30", report="ingest-analysis.json"
    )
    rows = tables(document)["Throughput"]
    assert {row["operation"] for row in rows} == {"rules analyze_text", "pii scan"}
    assert all(row["sections"] == 30 for row in rows)


def test_queue_benchmark_drains_every_job_it_enqueues(run_bench: Run) -> None:
    # The benchmark raises when a drain leaves any job not SUCCEEDED.
    document = run_bench(
        "bench/ingest.py",
        "queue",
        *("--jobs", "20", "--batch", "10", "--single-jobs", "5", "--concurrency", "2"),
        *("--history", "10", "--backlogs", "10", "--repeat", "1"),
        report="ingest-queue.json",
    )
    found = tables(document)
    drained = found["Enqueue in batches, then claim + ack (Worker.drain)"]
    assert [row["jobs"] for row in drained] == [20]
    assert found["Claim + ack with 10 finished jobs in the table"][0]["jobs"] == 20


def test_hostile_benchmark_reports_each_file_outcome(run_bench: Run) -> None:
    document = run_bench(
        "bench/ingest.py",
        "hostile",
        *("--only", "good-10-page.docx,truncated.docx", "--repeat", "1", "--no-cli-variant"),
        report="ingest-hostile.json",
    )
    outcomes = {row["file"]: row["outcome"] for row in tables(document)["Per file (one at a time)"]}
    assert outcomes["good-10-page.docx"].startswith("extracted")
    assert outcomes["truncated.docx"].startswith("refused")


def test_pipeline_benchmark_completes_every_uploaded_document(run_bench: Run) -> None:
    # The benchmark raises when a document is left unfinished.
    document = run_bench(
        "bench/ingest.py",
        "pipeline",
        *("--docs", "2", "--pages", "1", "--concurrency", "1", "--cli-docs", "0"),
        *("--repeat", "1"),
        report="ingest-pipeline.json",
    )
    (row,) = tables(document)["Throughput"]
    assert row["docs"] == 2
    assert row["jobs"] >= 4  # an extraction and an analysis job a document


# --- bench/bi.py -------------------------------------------------------------------------------


def test_bi_benchmark_runs_every_phase_and_rollups_equal_base_tables(run_bench: Run) -> None:
    document = run_bench(
        "bench/bi.py",
        "all",
        *("--documents", "20", "--days", "10", "--requests", "3", "--breakdown-requests", "1"),
        *("--upkeep-seconds", "0.2"),
        report="bi.json",
    )
    found = tables(document, "load")  # the load average is sampled every 5 s
    for phase in ("generate", "build", "sql", "graphql", "upkeep"):
        assert phase in found
    assert document["checks"]
    assert all(check["equal"] for check in document["checks"]), document["checks"]
    readers = {row["reader"] for row in found["graphql"]}
    assert readers == {"ADMIN (everything)", "BI token (AUDITOR, CONFIDENTIAL)"}


# --- bench/search.py ---------------------------------------------------------------------------


def test_search_benchmark_indexes_and_searches_both_backends(
    run_bench: Run, opensearch_url: str
) -> None:
    document = run_bench(
        "bench/search.py",
        *("--sections", "40", "--searches", "12", "--batch", "20"),
        report="search.json",
        env={"PRISM_BENCH_OPENSEARCH_URL": opensearch_url},
    )
    found = tables(document)
    latency = found["Search latency (first page of 20, hits + highlights + total + facets)"]
    assert [row["backend"] for row in latency] == ["postgres", "opensearch"]
    assert all(row["searches"] == 12 for row in latency)
    assert {row["backend"] for row in found["Indexing throughput"]} == {"postgres", "opensearch"}
    assert all(row["sections"] == 40 for row in found["Indexing throughput"])


# --- bench/cache.py ----------------------------------------------------------------------------


def test_cache_benchmark_checks_the_answer_then_measures(run_bench: Run) -> None:
    if shutil.which("redis-server") is None:  # the benchmark starts its own, as the tests do
        message = "redis-server is not installed (make test installs it: scripts/redis.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    document = run_bench(
        "bench/cache.py",
        "all",
        *("--docs", "3", "--other-docs", "0", "--pages", "1", "--servers", "redis"),
        *("--concurrency", "1", "--duration", "0.3", "--warmup", "0.1", "--rounds", "1"),
        *("--micro-iterations", "20", "--micro-io-iterations", "10", "--micro-batches", "1"),
        *("--pool-size", "2"),
        report="cache.json",
    )
    found = tables(document)
    # check_workload raised unless the warm workload's second request was a cache hit
    assert [row["workload"] for row in found["The answer (checked before measuring)"]] == [
        "warm · Redis",
        "cold · Redis",
    ]
    throughput = found["Throughput and latency (medians of the rounds)"]
    assert all(row["errors"] == 0 for row in throughput)
    steps = {row["step"] for row in found["Steps, timed alone in process"]}
    assert any(step.startswith("cache key") for step in steps)


def test_cache_profile_names_functions_that_exist() -> None:
    """`bench/cache.py profile` finds each step of a request in the server's profile by its
    code object: every function it names must still exist."""
    from bench import cache

    functions = cache.profiled_functions()
    assert functions
    for label, function in functions:
        code = getattr(function, "__wrapped__", function).__code__
        assert code.co_filename.endswith(".py"), label


# --- bench/perf ----------------------------------------------------------------------------------


def test_perf_benchmark_servers_answer_alike_without_load(run_bench: Run) -> None:
    document = run_bench(
        "-m",
        "bench.perf",
        "--check-only",
        *("--documents", "120", "--organizations", "1"),
        *("--servers", "prism-compiled,raw", "--limit-repeat", "2"),
        report="perf.json",
    )
    answers = document["checks"]["answers"]
    assert set(answers) == {"nested", "node", "filtered", "viewer", "nested-text", "viewer-new"}
    for query, checked in answers.items():
        assert checked["servers"] == ["prism-compiled", "raw"], query
        assert checked["rows"] > 0, query
    assert answers["nested"]["prism-compiled execution"] == {"path": "compiled"}
    # The web client's case: query text, no hash: planned all the same.
    assert answers["nested-text"]["prism-compiled execution"] == {"path": "compiled"}
    assert document["runs"] == []
    # The physical limit: without PostGraphile, prism-compiled's statement is the one
    # candidate of each query the planner covers, timed, and the raw server answered with it
    # (its answers were checked equal above), the viewer's included.
    limit = document["limit"]
    assert set(limit) == set(answers)
    for query in ("nested", "node", "filtered", "viewer", "nested-text"):
        chosen = limit[query]["chosen"]
        assert chosen["source"] == "prism-compiled", limit[query]
        assert chosen["explain_ms"] > 0, chosen
        assert chosen["rows"] == 1, chosen
        assert "prism-compiled" in limit[query]["reason"]
    assert answers["viewer"]["prism-compiled execution"] == {"path": "compiled"}
    coverage = document["coverage"]
    assert 0 < coverage["planned"] < coverage["fields"]


def test_perf_planned_coverage_comes_from_the_planner() -> None:
    from bench.perf import coverage

    found = coverage.planned_coverage()
    planned, not_planned = set(found["planned_fields"]), found["not_planned"]
    assert found["planned"] == len(planned)
    assert found["fields"] == len(planned) + len(not_planned)
    # what the benchmark's queries run compiled is planned, the viewer's fields included
    for label in ("Query.documents", "Query.node", "Document.sections", "Section.order"):
        assert label in planned, label
    for label in ("Analysis.feedbackItems", "Feedback.author", "User.email"):
        assert label in planned, label
    for label in ("Viewer.organization", "Organization.name", "Viewer.apiToken", "ApiToken.name"):
        assert label in planned, label
    assert "SearchHit.document" in not_planned  # search is answered by its backend
    done = subprocess.run(
        [sys.executable, "-m", "bench.perf", "--coverage"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    first = done.stdout.splitlines()[0]
    assert first == f"planned coverage: {found['planned']} of {found['fields']} read fields"
    assert "not planned: SearchHit.document" in done.stdout


def test_perf_limit_reshapes_postgraphile_rows_into_prism_answers() -> None:
    """The raw server's reshaping of PostGraphile's rows (PostGraphile itself needs Node.js and
    is left out here): PostGraphile 5's text arrays and 4.14's JSON, into Prism's shape."""
    from bench.perf import queries, raw_app

    assert raw_app.text_array('{{a,"b \\"c\\" {d}"},{NULL,"NULL"}}') == [
        ["a", 'b "c" {d}'],
        [None, "NULL"],
    ]
    assert raw_app.text_array("{}") == []
    assert raw_app.text_array(None) == []
    doc, section = "8cd6db88-a6db-4ef8-845c-8d11f2216e07", "209ba031-97db-49c2-b0ac-c6773699d75e"
    v5 = raw_app.pg5_nested([(doc, "a.docx", f"{{{{{section},0}}}}")])
    v4 = raw_app.pg4_nested(
        [
            {
                "data": json.dumps(
                    [
                        {
                            "@nodes": {
                                "id": doc,
                                "filename": "a.docx",
                                "@documentSectionsByDocumentId": {
                                    "data": [{"@nodes": {"id": section, "ord": 0}}]
                                },
                            }
                        }
                    ]
                )
            }
        ]
    )
    assert v5 == v4
    assert queries.nested_prism(v5) == [(doc, "a.docx", [(section, 0)])]
    items = json.dumps([{"id": "1-0", "category": "c", "riskLevel": "LOW", "quote": 'a "q"'}])
    quoted = items.replace("\\", "\\\\").replace('"', '\\"')
    analyses, feedback = (
        f'{{{{{section},HIGH,"{quoted}"}}}}',
        f"{{{{{section},APPROVE,NULL,NULL}}}}",
    )
    node = raw_app.pg5_node([(doc, "a.docx", analyses, feedback)])
    assert node["node"]["analyses"]["edges"][0]["node"]["feedbackItems"] == [
        {"id": "1-0", "category": "c", "riskLevel": "LOW"}
    ]
    assert node["node"]["feedback"]["edges"][0]["node"]["author"] is None


def test_perf_postgraphile5_is_pinned_by_its_lock() -> None:
    """PostGraphile 5 runs from bench/perf/postgraphile5 (npm ci of its lock; not in `make
    test`: it needs Node.js): the manifest pins exact versions the lock holds."""
    project = BENCH / "perf" / "postgraphile5"
    manifest = json.loads((project / "package.json").read_text())
    lock = json.loads((project / "package-lock.json").read_text())
    assert manifest["dependencies"]["postgraphile"].startswith("5.")
    for name, version in manifest["dependencies"].items():
        assert lock["packages"][""]["dependencies"][name] == version, name
        assert lock["packages"][f"node_modules/{name}"]["version"] == version, name
    for name in ("server.js", "polyfill.cjs"):
        assert (project / name).exists(), name


# --- public names only -------------------------------------------------------------------------

# Private names the benchmarks may touch, each in one place: graphql-core's schema under
# Strawberry's (no public accessor), and the standard library's forkserver, stopped to read
# the extraction children's peak memory (guarded: skipped if it changes).
ALLOWED_PRIVATE = {
    ("bench/common.py", "_schema"),
    ("bench/ingest.py", "_forkserver"),
    ("bench/ingest.py", "_stop"),
}


def private_uses(path: Path) -> list[str]:
    """``from x import _y`` of prism or bench, and ``something._y`` on anything but self/cls."""
    relative = str(path.relative_to(ROOT))
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            private = [a.name for a in node.names if a.name.startswith("_")]
            if private and node.module.split(".")[0] in ("prism", "bench", "tests"):
                found.append(f"{relative}:{node.lineno}: from {node.module} import {private}")
        elif (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            and (relative, node.attr) not in ALLOWED_PRIVATE
        ):
            found.append(f"{relative}:{node.lineno}: .{node.attr}")
    return found


def test_benchmarks_use_public_names_only() -> None:
    files = sorted(BENCH.rglob("*.py"))
    assert len(files) > 10
    found = [use for path in files for use in private_uses(path)]
    assert found == []


def test_benchmarks_import_each_other_as_the_bench_package() -> None:
    """No sys.path tricks and no bare `import ingest`: bench modules import as bench.<name>,
    so a name moved between them fails to import here, not at the start of a long run."""
    modules = {path.stem for path in BENCH.glob("*.py")} | {"perf"}
    for path in sorted(BENCH.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                bare = [a.name for a in node.names if a.name.split(".")[0] in modules]
                assert not bare, f"{path.relative_to(ROOT)}:{node.lineno}: import {bare}"
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                top = node.module.split(".")[0]
                assert top not in modules, f"{path.relative_to(ROOT)}:{node.lineno}: {top}"
            elif isinstance(node, ast.Attribute) and node.attr == "path":
                assert not (isinstance(node.value, ast.Name) and node.value.id == "sys"), (
                    f"{path.relative_to(ROOT)}:{node.lineno}: sys.path"
                )
    for name in sorted(modules - {"__init__", "__main__"}):
        __import__(f"bench.{name}")


# --- bench/outbox.py ---------------------------------------------------------------------------


def test_outbox_benchmark_publishes_every_event_and_measures_the_mutation(
    run_bench: Run, kafka_bootstrap: str
) -> None:
    document = run_bench(
        "bench/outbox.py",
        *("--events", "200", "--organizations", "2", "--batch", "50", "--rounds", "1"),
        *("--blocks", "1", "--block", "3", "--latency-changes", "3", "--latency-gap", "0.01"),
        report="events.json",
        env={"PRISM_BENCH_KAFKA_BOOTSTRAP": kafka_bootstrap},
    )
    found = tables(document)
    (relayed,) = found["Relay throughput to the local broker (Relay.drain, acks=all, idempotent)"]
    assert relayed["events"] >= 200  # and the organizations' own events
    (latency,) = found["Latency: commit → arrival in Kafka (relay running, woken by NOTIFY)"]
    assert latency["arrived"] == latency["changes"] == 3
    assert len(found["What the outbox adds to the mutation"]) == 2


# --- bench/subscriptions.py --------------------------------------------------------------------


def test_subscriptions_benchmark_delivers_every_change_to_every_subscriber(
    run_bench: Run,
) -> None:
    document = run_bench(
        "bench/subscriptions.py",
        *("--changes", "5", "--gap", "0.01", "--subscribers", "1,2"),
        report="subscriptions.json",
    )
    rows = tables(document)["Latency: commit → arrival at the WebSocket subscribers"]
    assert [(r["subscribers"], r["deliveries"]) for r in rows] == [(1, 5), (2, 10)]
    # one read of each change's row for all the subscribers of the organization
    assert all(r["rows read by the server"] == 5 for r in rows)


# --- bench/webhooks.py -------------------------------------------------------------------------


def test_webhooks_benchmark_delivers_every_change_signed(run_bench: Run) -> None:
    document = run_bench(
        "bench/webhooks.py",
        *("--changes", "3", "--gap", "0.01", "--endpoints", "2"),
        report="webhooks.json",
    )
    (row,) = tables(document)[
        "Latency: commit → delivered at the endpoint (dispatcher woken by NOTIFY)"
    ]
    assert row["delivered"] == row["signatures verified"] == 6


# --- bench/pii.py ------------------------------------------------------------------------------


def test_pii_benchmark_reports_every_type(run_bench: Run) -> None:
    document = run_bench("bench/pii.py", "--repeat", "1", report="pii.json")
    rows = tables(document)["Precision and recall per type"]
    assert {row["type"] for row in rows} >= {"IBAN", "MRZ", "PHONE", "PERSON"}
    assert document["environment"]["loadavg_1m_start"] >= 0


def test_perf_misses_times_a_miss_and_a_hit_of_every_benchmark_query() -> None:
    """Every benchmark query is planned (the viewer's too), and a miss, which plans, costs
    more than a hit, which only binds."""
    from bench.perf import misses

    found = misses.measure()
    assert set(found) == {"nested", "node", "filtered", "viewer"}
    for label, figures in found.items():
        assert isinstance(figures, dict), (label, figures)
        assert 0 < figures["hit_us"] < figures["miss_us"], (label, figures)


def test_tracing_benchmark_measures_every_server_and_exports_spans(run_bench: Run) -> None:
    document = run_bench(
        "bench/tracing.py",
        "--requests",
        "20",
        "--rounds",
        "1",
        "--warmup",
        "5",
        report="tracing.json",
    )
    found = tables(document)
    servers = {row["server"] for row in found["CPU per request"]}
    assert servers == {"off", "unsampled", "sampled", "always"}
    paths = {row["query"]: row["path"] for row in found["CPU per request"]}
    assert paths == {
        "lean (registered, compiled)": "compiled",
        "full (text, Strawberry)": "interpreted",
    }
    spans = {row["server"]: row["spans received"] for row in found["spans exported"]}
    # nothing sampled at ratio 0; every request traced when always on
    assert spans["unsampled"] == 0
    assert spans["always"] >= 2 * 20 * 2
