"""Structured logs and Prometheus metrics (imports nothing of Prism's, so any layer may use it;
traces are ``prism.tracing``'s)."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Sequence

import structlog
from prometheus_client import Counter, Gauge, Histogram

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
DB_POOL = Gauge("prism_db_pool_connections", "Database pool connections by state.", ["state"])
JOBS = Gauge(
    "prism_jobs",
    "Background jobs not succeeded, by state (QUEUED, RUNNING, FAILED: retrying, DEAD: given "
    "up) and kind, over every organization; read from the database at scrape time. Alert when "
    "a DEAD series is above 0 (`prism jobs list --state DEAD`, `prism jobs retry`).",
    ["state", "kind"],
)
DATA_QUALITY_SCORE = Gauge(
    "prism_data_quality_score",
    "Latest data-quality score (0-1) by organization, table, dimension and check.",
    ["organization", "table", "dimension", "check"],
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
)
OUTBOX_LAG_SECONDS = Gauge(
    "prism_outbox_lag_seconds",
    "Age of the oldest outbox event not yet published to Kafka (0: none). Alert when it grows: "
    "the brokers or the relay are away.",
)
OUTBOX_PRUNED = Counter(
    "prism_outbox_pruned_total", "Published outbox events deleted after the retention window."
)

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
