"""The lake export: Parquet datasets in the object store, for analytics outside Prism.

- bronze: raw rows of documents, analyses and feedback (no section text, no secrets);
- silver: the same rows cleaned (soft-deleted documents dropped) with PII masked in every
  free-text column (``prism.extraction.pii.mask_all``);
- gold: daily aggregates per organization.

Layout: ``lake/<layer>/<dataset>/year=YYYY/month=M/day=D/org-<organization>.parquet``
(hive partitions, by the row's creation day in UTC), and ``lake/_schemas/<layer>/<dataset>
.json`` with each dataset's Arrow schema.

Incremental and idempotent: each (organization, table) has a watermark on its change column;
a run rewrites, whole, only the day partitions that hold rows changed since, from the rows as
they are now. A partition's file is a function of the database, so a re-run (or an
overlapping ``--since``) writes the same bytes, and a run with nothing new writes nothing.
Rows are read only up to ``settle_seconds`` ago, so a transaction still in flight with an
older timestamp is not skipped by the watermark.

Every writer of an organization's partitions (the export, an erasure's or a purge's rewrite)
holds the organization's lake lock (``lock_organization``) from its first read to its last
write: an export that read a day before an erasure committed cannot write those rows back
after the erasure's rewrite (the rewrite waits, then reads the rows as they are).
"""

from __future__ import annotations

import io
import re
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy.ext.asyncio import AsyncSession

from prism.config import Settings
from prism.db.engine import Database
from prism.extraction.pii import mask_all
from prism.models import lake as lake_models
from prism.models.analyses import Analysis
from prism.models.base import Base, utcnow
from prism.models.documents import Document
from prism.models.feedback import Feedback
from prism.models.lake import ExportColumn
from prism.models.organizations import read_organization_ids
from prism.storage import ObjectStore

PREFIX = "lake"
PARQUET = "application/vnd.apache.parquet"
LAYERS = ("bronze", "silver", "gold")
# What the scheduled export records when it finishes (when it is next due).
RUN_RECORD = f"{PREFIX}/_runs/latest.json"
_DAY = re.compile(r"/year=(\d{4})/month=(\d{1,2})/day=(\d{1,2})/")


@dataclass(frozen=True)
class LakePeriods:
    """How many days each layer keeps a partition, counted from the partition's day
    (PRISM_LAKE_BRONZE_DAYS, _SILVER_DAYS, _GOLD_DAYS). Raw rows go first; aggregates, which
    name no one, stay longest."""

    bronze: int = 90
    silver: int = 730
    gold: int = 2555

    @classmethod
    def of(cls, settings: Settings) -> LakePeriods:
        return cls(
            bronze=settings.lake_bronze_days,
            silver=settings.lake_silver_days,
            gold=settings.lake_gold_days,
        )

    def keeps(self, layer: str, day: date, today: date) -> bool:
        days: int = getattr(self, layer)
        return (today - day).days < days


@dataclass(frozen=True)
class Dataset:
    name: str
    model: type[Base]
    # The column a change moves forward (the watermark's).
    changed: str
    # Free-text columns masked in silver.
    masked: tuple[str, ...] = ()


DATASETS = (
    Dataset("documents", Document, "updated_at", ("filename", "processing_error")),
    Dataset("analyses", Analysis, "created_at", ("feedback_items",)),
    Dataset("feedback", Feedback, "updated_at", ("custom_text", "highlighted_text")),
)
# Never leaves Prism: sealed or personal columns with no analytic use. (Sealed columns are
# binary and never exported either: a RESTRICTED analysis's findings are in the lake as the
# empty ``feedback_items`` its row holds, and counted by ``finding_count``.)
EXCLUDED = {"storage_key"}
# Free-text columns that hold JSON documents (masked value by value in silver).
JSON_COLUMNS = {"feedback_items"}

GOLD_SCHEMA = pa.schema(
    [
        ("organization_id", pa.string()),
        ("activity_date", pa.date32()),
        ("documents_uploaded", pa.int64()),
        ("bytes_uploaded", pa.int64()),
        ("analyses", pa.int64()),
        ("high_risk_analyses", pa.int64()),
        # From the analyses' finding_count: sealed (RESTRICTED) findings are counted too.
        ("findings", pa.int64()),
        ("tokens_used", pa.int64()),
        ("cost_usd", pa.float64()),
        ("mean_confidence", pa.float64()),
        ("feedback", pa.int64()),
        ("feedback_accepted", pa.int64()),
    ]
)


ARROW_TYPES: dict[str, pa.DataType] = {
    "timestamp": pa.timestamp("us", tz="UTC"),
    "bool": pa.bool_(),
    "int": pa.int64(),
    "float": pa.float64(),
    "decimal": pa.decimal128(20, 6),
    "array": pa.list_(pa.string()),
    "json": pa.string(),
    "string": pa.string(),
}


def _arrow_type(column: ExportColumn) -> pa.DataType:
    return ARROW_TYPES[lake_models.column_kind(column)]


def _columns(dataset: Dataset) -> list[ExportColumn]:
    return lake_models.export_columns(dataset.model, EXCLUDED)


def schema_of(dataset: Dataset) -> pa.Schema:
    return pa.schema([(c.name, _arrow_type(c)) for c in _columns(dataset)])


def _converter(column: ExportColumn) -> Callable[[Any], Any]:
    """How a column's database value becomes its Arrow value, chosen by the column's type
    (never by the value's shape: an empty JSON list and a list of strings look alike)."""
    kind = lake_models.column_kind(column)
    if kind == "json":
        # Always a JSON document in a string column, whatever the value ([] and {} too).
        return lambda v: None if v is None else _json(v)
    if kind == "array":
        return lambda v: None if v is None else [None if x is None else str(x) for x in v]
    return _value


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _value(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return value


def _mask_json(value: Any) -> Any:
    if isinstance(value, str):
        return mask_all(value)
    if isinstance(value, list):
        return [_mask_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _mask_json(v) for k, v in value.items()}
    return value


def _silver(dataset: Dataset, row: dict[str, Any]) -> dict[str, Any]:
    cleaned = dict(row)
    for name in dataset.masked:
        value = cleaned.get(name)
        if value is None:
            continue
        if name in JSON_COLUMNS:
            # Stored as a JSON document (see _converter): masked inside, written back as one.
            cleaned[name] = _json(_mask_json(orjson.loads(value)))
        else:
            cleaned[name] = mask_all(value)
    return cleaned


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    # No statistics timestamps or random ids in the file: the same rows give the same bytes.
    pq.write_table(table, sink, compression="zstd", write_statistics=True)
    return sink.getvalue()


def partition(layer: str, dataset: str, day: date, organization_id: uuid.UUID) -> str:
    return (
        f"{PREFIX}/{layer}/{dataset}/year={day.year}/month={day.month}/day={day.day}/"
        f"org-{organization_id}.parquet"
    )


async def lock_organization(session: AsyncSession, organization_id: uuid.UUID) -> None:
    """The organization's lake lock, held until ``session``'s transaction ends."""
    await lake_models.lock_organization(session, organization_id)


@dataclass
class LakeReport:
    organizations: int = 0
    files: int = 0
    rows: int = 0
    partitions: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # Partition files removed because their layer's period ended, by layer.
    expired: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "organizations": self.organizations,
            "files": self.files,
            "rows": self.rows,
            "partitions": dict(self.partitions),
            "expired": dict(self.expired),
        }


async def _changed_days(
    session: AsyncSession,
    dataset: Dataset,
    organization_id: uuid.UUID,
    lower: datetime | None,
    upper: datetime,
) -> tuple[set[date], datetime | None]:
    return await lake_models.changed_days(
        session, dataset.model, dataset.changed, organization_id, lower, upper
    )


async def _rows_of_day(
    session: AsyncSession, dataset: Dataset, organization_id: uuid.UUID, day: date
) -> list[dict[str, Any]]:
    columns = _columns(dataset)
    converters = [_converter(c) for c in columns]
    rows = await lake_models.rows_of_day(session, dataset.model, columns, organization_id, day)
    return [
        {c.name: convert(v) for c, convert, v in zip(columns, converters, row, strict=True)}
        for row in rows
    ]


def _gold_row(
    organization_id: uuid.UUID, day: date, rows: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    documents = rows["documents"]
    analyses = rows["analyses"]
    feedback = rows["feedback"]
    confidences = [a["confidence"] for a in analyses if a["confidence"] is not None]
    return {
        "organization_id": str(organization_id),
        "activity_date": day,
        "documents_uploaded": len(documents),
        "bytes_uploaded": sum(d["file_size"] for d in documents),
        "analyses": len(analyses),
        "high_risk_analyses": sum(1 for a in analyses if a["risk_level"] == "HIGH"),
        "findings": sum(a["finding_count"] or 0 for a in analyses),
        "tokens_used": sum(a["tokens_used"] for a in analyses),
        "cost_usd": float(sum((Decimal(a["cost_usd"]) for a in analyses), Decimal(0))),
        "mean_confidence": sum(confidences) / len(confidences) if confidences else None,
        "feedback": len(feedback),
        "feedback_accepted": sum(1 for f in feedback if f["action"] == "ACCEPTED"),
    }


async def _put(objects: ObjectStore, key: str, body: bytes, content_type: str) -> None:
    await objects.put_file(key, io.BytesIO(body), size=len(body), content_type=content_type)


async def write_schemas(objects: ObjectStore) -> None:
    """Each dataset's Arrow schema as JSON (written only when it changed)."""
    layouts: list[tuple[str, str, pa.Schema]] = []
    for dataset in DATASETS:
        layouts += [("bronze", dataset.name, schema_of(dataset))]
        layouts += [("silver", dataset.name, schema_of(dataset))]
    layouts.append(("gold", "daily_activity", GOLD_SCHEMA))
    for layer, name, schema in layouts:
        body = orjson.dumps(
            {
                "layer": layer,
                "dataset": name,
                "partitioning": ["year", "month", "day"],
                "fields": [{"name": f.name, "type": str(f.type)} for f in schema],
            },
            option=orjson.OPT_INDENT_2,
        )
        key = f"{PREFIX}/_schemas/{layer}/{name}.json"
        if await objects.exists(key):
            current = b"".join([chunk async for chunk in objects.open_stream(key)])
            if current == body:
                continue
        await _put(objects, key, body, "application/json")


async def _write_day(
    session: AsyncSession,
    objects: ObjectStore,
    organization_id: uuid.UUID,
    day: date,
    datasets: list[Dataset],
    report: LakeReport,
    periods: LakePeriods | None = None,
    today: date | None = None,
) -> dict[str, int]:
    """Rewrite one organization's partitions of ``day`` for ``datasets`` (and gold) from the
    rows as they are now; a partition left with no rows is removed. Rows written, by dataset.

    Every file of the day is built (converted, masked, encoded) before the first one is
    written, so a row that cannot be exported fails the run with the lake as it was; each
    file is then put whole (a temporary name renamed into place, or one S3 PUT). A layer
    whose period no longer keeps ``day`` is not written again (its file is removed): a late
    change to an old row does not bring an expired partition back."""

    def kept(layer: str) -> bool:
        return periods is None or periods.keeps(layer, day, today or utcnow().date())

    rows = {d.name: await _rows_of_day(session, d, organization_id, day) for d in DATASETS}
    writes: list[tuple[str, bytes | None, str | None]] = []  # (key, body or None: delete)
    written: dict[str, int] = {}
    for dataset in datasets:
        schema = schema_of(dataset)
        bronze = rows[dataset.name]
        silver = [
            _silver(dataset, r)
            for r in bronze
            if not (dataset.name == "documents" and r["deleted_at"] is not None)
        ]
        for layer, layer_rows in (("bronze", bronze), ("silver", silver)):
            key = partition(layer, dataset.name, day, organization_id)
            if not layer_rows or not kept(layer):
                writes.append((key, None, None))
                continue
            table = pa.Table.from_pylist(layer_rows, schema=schema)
            writes.append((key, _parquet(table), f"{layer}/{dataset.name}"))
        written[dataset.name] = len(bronze)
    key = partition("gold", "daily_activity", day, organization_id)
    if any(rows.values()) and kept("gold"):
        gold = pa.Table.from_pylist([_gold_row(organization_id, day, rows)], schema=GOLD_SCHEMA)
        writes.append((key, _parquet(gold), "gold/daily_activity"))
    else:
        writes.append((key, None, None))
    for key, body, name in writes:
        if body is None:
            await objects.delete(key)
            continue
        await _put(objects, key, body, PARQUET)
        report.files += 1
        report.partitions[str(name)] += 1
    report.rows += sum(written.values())
    return written


async def rewrite_days(
    db: Database,
    objects: ObjectStore,
    organization_id: uuid.UUID,
    days: set[date],
    *,
    periods: LakePeriods | None = None,
) -> LakeReport:
    """Rewrite an organization's partitions of ``days`` from the current rows (after an
    erasure deleted rows the watermark cannot see). Nothing, if the lake was never written."""
    report = LakeReport()
    async with db.transaction(organization_id) as session:
        await lock_organization(session, organization_id)
        exported = [
            await lake_models.read_watermark(session, organization_id, d.name) for d in DATASETS
        ]
        if not any(exported):
            return report
        for day in sorted(days):
            await _write_day(
                session, objects, organization_id, day, list(DATASETS), report, periods
            )
    return report


async def export(
    db: Database,
    objects: ObjectStore,
    *,
    since: datetime | None = None,
    settle_seconds: float = 60,
    now: Callable[[], datetime] = utcnow,
    periods: LakePeriods | None = None,
) -> LakeReport:
    """Export every organization's changes since its watermarks (or since ``since``); with
    ``periods``, a partition no longer kept is not written."""
    report = LakeReport()
    await write_schemas(objects)
    today = now().date()
    upper = now() - timedelta(seconds=settle_seconds)
    async with db.transaction(None) as session:
        organizations = await read_organization_ids(session)
    for organization_id in organizations:
        report.organizations += 1
        async with db.transaction(organization_id) as session:
            await lock_organization(session, organization_id)
            touched: dict[str, set[date]] = {}
            newest: dict[str, datetime | None] = {}
            for dataset in DATASETS:
                lower = since or await lake_models.read_watermark(
                    session, organization_id, dataset.name
                )
                touched[dataset.name], newest[dataset.name] = await _changed_days(
                    session, dataset, organization_id, lower, upper
                )
            days: set[date] = set().union(*touched.values())
            exported: dict[str, int] = defaultdict(int)
            for day in sorted(days):
                written = await _write_day(
                    session,
                    objects,
                    organization_id,
                    day,
                    [d for d in DATASETS if day in touched[d.name]],
                    report,
                    periods,
                    today,
                )
                for name, count in written.items():
                    exported[name] += count
            for dataset in DATASETS:
                mark = newest[dataset.name]
                if mark is not None:
                    await lake_models.advance_watermark(
                        session, organization_id, dataset.name, mark, exported[dataset.name]
                    )
    return report


def partition_day(key: str) -> date | None:
    """The day of a partition file's key (None: not a partition file)."""
    found = _DAY.search(key)
    if found is None:
        return None
    year, month, day = (int(part) for part in found.groups())
    try:
        return date(year, month, day)
    except ValueError:
        return None


async def expire(
    objects: ObjectStore, periods: LakePeriods, *, today: date | None = None
) -> dict[str, int]:
    """Remove every partition file its layer no longer keeps: files removed, by layer."""
    today = today or utcnow().date()
    removed: dict[str, int] = {}
    for layer in LAYERS:
        doomed = [
            key
            async for key, _ in objects.list_objects(f"{PREFIX}/{layer}/")
            if (day := partition_day(key)) is not None and not periods.keeps(layer, day, today)
        ]
        for key in doomed:
            await objects.delete(key)
        removed[layer] = len(doomed)
    return removed


async def last_scheduled_run(objects: ObjectStore) -> datetime | None:
    """When the scheduled export last finished (None: never)."""
    record = await _run_record(objects)
    return None if record is None else datetime.fromisoformat(record["finishedAt"])


async def _run_record(objects: ObjectStore) -> dict[str, Any] | None:
    if not await objects.exists(RUN_RECORD):
        return None
    record: dict[str, Any] = orjson.loads(
        b"".join([chunk async for chunk in objects.open_stream(RUN_RECORD)])
    )
    return record


async def scheduled_export(
    db: Database,
    objects: ObjectStore,
    periods: LakePeriods,
    *,
    settle_seconds: float = 60,
) -> LakeReport:
    """The workers' lake run (PRISM_LAKE_INTERVAL_HOURS): export what changed, remove what
    the layers' periods no longer keep, and record the run (what makes it due again)."""
    report = await export(db, objects, settle_seconds=settle_seconds, periods=periods)
    report.expired = await expire(objects, periods)
    previous = await _run_record(objects)
    record = {
        "finishedAt": utcnow().isoformat(),
        "runs": (previous or {}).get("runs", 0) + 1,
        "report": report.as_json(),
    }
    await _put(
        objects, RUN_RECORD, orjson.dumps(record, option=orjson.OPT_INDENT_2), "application/json"
    )
    return report
