"""Structured logs and Prometheus metrics (imports nothing of Prism's, so any layer may use it).

Several processes on one host (``prism serve`` with ``PRISM_WORKERS`` > 1, or API and worker
processes given one ``PROMETHEUS_MULTIPROC_DIR``) write their metrics to files in that
directory, and a scrape of any of them sums the files (``exposition``): counters and
histograms over every process that ever ran there since the directory was cleaned, gauges as
each one's ``multiprocess_mode`` says. Figures read from the database at scrape time
(``QUEUE``) are not in the files: the process that answers the scrape reads them.
Traces are ``prism.tracing``'s."""

from __future__ import annotations

import glob
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence

import structlog
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

HTTP_REQUESTS = Counter(
    "prism_http_requests_total", "HTTP requests by route and status.", ["method", "route", "status"]
)
GRAPHQL_OPERATIONS = Counter(
    "prism_graphql_operations_total", "GraphQL operations by name and type.", ["operation", "type"]
)
GRAPHQL_LATENCY = Histogram(
    "prism_graphql_operation_seconds",
    "GraphQL operation latency by name.",
    ["operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LEAN_PATH = Counter(
    "prism_lean_path_total",
    "GraphQL requests over HTTP the lean path answered (outcome `answered`) or handed to the "
    "full path, by the reason it did.",
    ["outcome"],
)
GRAPHQL_ERRORS = Counter("prism_graphql_errors_total", "GraphQL errors by code.", ["code"])
DB_POOL = Gauge(
    "prism_db_pool_connections",
    "Database pool connections by state, summed over the live processes.",
    ["state"],
    multiprocess_mode="livesum",
)
DATA_QUALITY_SCORE = Gauge(
    "prism_data_quality_score",
    "Latest data-quality score (0-1) by organization, table, dimension and check.",
    ["organization", "table", "dimension", "check"],
    multiprocess_mode="mostrecent",
)
OUTBOX_PUBLISHED = Counter(
    "prism_outbox_published_total",
    "Outbox events the relay published to Kafka (acknowledged by the brokers), by topic.",
    ["topic"],
)
OUTBOX_BATCHES = Counter(
    "prism_outbox_batches_total",
    "Relay batches by outcome (published; failed: sent again after a backoff).",
    ["outcome"],
)
OUTBOX_BATCH_SECONDS = Histogram(
    "prism_outbox_batch_seconds",
    "Time from reading a batch of events to the brokers' acknowledgement of all of it.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
OUTBOX_LAG_EVENTS = Gauge(
    "prism_outbox_lag_events",
    "Outbox events not yet published to Kafka, over every organization (read from the "
    "database at scrape time and by the relay).",
    multiprocess_mode="mostrecent",
)
OUTBOX_LAG_SECONDS = Gauge(
    "prism_outbox_lag_seconds",
    "Age of the oldest outbox event not yet published to Kafka (0: none). Alert when it grows: "
    "the brokers or the relay are away.",
    multiprocess_mode="mostrecent",
)
OUTBOX_PRUNED = Counter(
    "prism_outbox_pruned_total", "Published outbox events deleted after the retention window."
)


# --- jobs (observed by the worker that runs them) ----------------------------------------------

_JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
JOB_RUNS = Counter(
    "prism_job_runs_total",
    "Job runs by kind and outcome: succeeded; retried (failed, runs again after a backoff); "
    "dead (given up); postponed (a dependency was away; the attempt given back); lost (its "
    "lease ran out and another run owns the job).",
    ["kind", "outcome"],
)
JOB_SECONDS = Histogram(
    "prism_job_seconds",
    "Time a job run took, by kind and outcome (as prism_job_runs_total).",
    ["kind", "outcome"],
    buckets=_JOB_BUCKETS,
)
JOB_WAIT_SECONDS = Histogram(
    "prism_job_wait_seconds",
    "Time from a job becoming runnable (queued, or its retry due) to a worker claiming it, by "
    "kind: how long the queue made it wait.",
    ["kind"],
    buckets=_JOB_BUCKETS,
)

# --- document processing -----------------------------------------------------------------------

EXTRACTION_SECONDS = Histogram(
    "prism_extraction_seconds",
    "Text extraction of one original (in its child process, OCR included), by file kind.",
    ["kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
ANALYSIS_SECONDS = Histogram(
    "prism_analysis_seconds",
    "Analysis of one section by the analyzer (a remote model's call included), by analyzer.",
    ["analyzer"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
AI_COST_USD = Counter(
    "prism_ai_cost_usd_total", "What the analyses cost (US dollars), by analyzer.", ["analyzer"]
)
AI_TOKENS = Counter(
    "prism_ai_tokens_total", "Model tokens the analyses used, by analyzer.", ["analyzer"]
)

# --- the edge: response cache, rate limits -----------------------------------------------------

RESPONSE_CACHE = Counter(
    "prism_response_cache_lookups_total",
    "Response-cache lookups of cacheable registered queries, by result (hit, miss).",
    ["result"],
)
RATE_LIMITED = Counter(
    "prism_rate_limited_total",
    "Requests refused RATE_LIMITED, by what the bucket could not pay: cost (a request's "
    "estimated cost) or refusal (the charge of a request refused for another reason).",
    ["reason"],
)

# --- webhooks (delivered by the workers) -------------------------------------------------------

# The results a webhook delivery attempt is counted under.
WEBHOOK_RESULTS = ("delivered", "failed", "dead", "refused")
WEBHOOK_DELIVERIES = Counter(
    "prism_webhook_deliveries_total",
    "Webhook delivery attempts by result (delivered: a 2xx; failed: another status, a timeout or "
    "a connection error, tried again; dead: given up; refused: the target address is not "
    "allowed).",
    ["result"],
)
WEBHOOK_DELIVERY_SECONDS = Histogram(
    "prism_webhook_delivery_seconds",
    "Time of one webhook delivery attempt, from connecting to the receiver's answer.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# Series of bounded label sets exist from the start (at 0), so rates and ratios over them are
# defined before the first event, and a scrape names every one.
for _result in ("hit", "miss"):
    RESPONSE_CACHE.labels(_result)
for _reason in ("cost", "refusal"):
    RATE_LIMITED.labels(_reason)
for _result in WEBHOOK_RESULTS:
    WEBHOOK_DELIVERIES.labels(_result)


# --- figures read from the database at scrape time ---------------------------------------------


class QueueFigures(Collector):
    """``prism_jobs``: the job queue as the database counted it at the last scrape of this
    process (set by ``prism.jobs.watch.observe_jobs``). Not a gauge in the multiprocess files:
    the process answering a scrape counts, so no other process's older count can stand in."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self.ages: dict[tuple[str, str], float] = {}

    def set(self, counts: Iterable[tuple[str, str, int, float]]) -> None:
        rows = list(counts)
        current = {(state, kind): jobs for state, kind, jobs, _ in rows}
        # Series shown once stay, at 0 when their jobs are gone: an alert on DEAD > 0 resolves.
        self.counts = dict.fromkeys(self.counts, 0) | current
        self.ages = dict.fromkeys(self.ages, 0.0) | {
            (state, kind): oldest for state, kind, _, oldest in rows
        }

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "prism_jobs",
            "Background jobs not succeeded, by state (QUEUED, RUNNING, FAILED: retrying, DEAD: "
            "given up) and kind, over every organization; read from the database at scrape "
            "time. Alert when a DEAD series is above 0 (`prism jobs list --state DEAD`, "
            "`prism jobs retry`).",
            labels=["state", "kind"],
        )
        for (state, kind), jobs in sorted(self.counts.items()):
            family.add_metric([state, kind], jobs)
        yield family
        ages = GaugeMetricFamily(
            "prism_job_oldest_seconds",
            "Seconds since the oldest job of each state and kind became what it is: runnable "
            "(QUEUED, FAILED), started (RUNNING) or given up (DEAD); 0 when there is none. "
            "Alert when QUEUED ages while workers run (they do not keep up, or none takes it).",
            labels=["state", "kind"],
        )
        for (state, kind), oldest in sorted(self.ages.items()):
            ages.add_metric([state, kind], oldest)
        yield ages


QUEUE = QueueFigures()
REGISTRY.register(QUEUE)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def _pids_of_files(directory: str) -> set[int]:
    pids = set()
    for path in glob.glob(os.path.join(directory, "*.db")):
        tail = os.path.basename(path)[: -len(".db")].rsplit("_", 1)[-1]
        if tail.isdigit():
            pids.add(int(tail))
    return pids


def sweep_dead_processes(directory: str) -> list[int]:
    """Forget the live gauges of processes gone from this host (killed ones never said so):
    ``mark_process_dead`` for each pid with files but no process. Their counters and
    histograms stay, so the fleet's sums never go backwards."""
    gone = [pid for pid in _pids_of_files(directory) if not process_alive(pid)]
    for pid in gone:
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    return gone


def clean_multiprocess_dir(directory: str) -> int:
    """At a server's start: delete the files of processes no longer running (a directory
    kept over a restart would otherwise add the dead processes' counters to the new ones
    forever); how many files went."""
    os.makedirs(directory, exist_ok=True)
    removed = 0
    for path in glob.glob(os.path.join(directory, "*.db")):
        tail = os.path.basename(path)[: -len(".db")].rsplit("_", 1)[-1]
        if tail.isdigit() and process_alive(int(tail)):
            continue
        os.remove(path)
        removed += 1
    return removed


def scrape_registry() -> CollectorRegistry:
    """What a scrape reads: this process's registry, or (multiprocess mode) the files of
    every process of this host's directory, with the scrape-time figures."""
    directory = multiprocess_dir()
    if directory is None:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, directory)  # type: ignore[no-untyped-call]
    registry.register(QUEUE)
    return registry


def exposition() -> bytes:
    """The metrics page (the dead processes' live gauges forgotten first)."""
    directory = multiprocess_dir()
    if directory is not None:
        sweep_dead_processes(directory)
    return generate_latest(scrape_registry())


# Label values come from clients (paths, operation names): a bounded set keeps one client from
# growing the metrics without end.
MAX_OPERATION_NAMES = 500
_OPERATION = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_seen_operations: set[str] = set()


def operation_label(name: str | None) -> str:
    if not name:
        return "anonymous"
    if name in _seen_operations:
        return name
    if _OPERATION.match(name) and len(_seen_operations) < MAX_OPERATION_NAMES:
        _seen_operations.add(name)
        return name
    return "other"


def configure_logging(
    level: str = "INFO",
    *,
    json: bool = True,
    processors: Sequence[structlog.typing.Processor] = (),
) -> None:
    """JSON lines on stderr; request ids come from structlog's contextvars; ``processors``
    add to every line (the trace ids, when tracing is on: ``prism.tracing.log_processors``)."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *processors,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
