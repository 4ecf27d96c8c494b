"""Benchmarks of the BI aggregates (issue "BI aggregates").

    .venv/bin/python bench/bi.py all --documents 100000      # about 1,000,000 analyses
    .venv/bin/python bench/bi.py all --documents 10000 --requests 100   # a quick look

One fresh database (as bench/ingest.py: PRISM_DATABASE_URL's server, else an embedded
PostgreSQL in a temporary directory) goes through, in order:

1. generate  - `prism demo --scale`'s generator (COPY) writes the corpus: rows/s per table;
2. build     - the first refresh of every organization's rollups (bulk maintenance);
3. queries   - every BI field over GraphQL (in-process ASGI, real token, no result cache; the
               BI token sends registered operations by hash, ADMIN the text) and
               the executive and 90-day daily summaries in SQL, from the rollups and from the
               base tables (same numbers, checked), p50/p95/p99: the ratio;
4. upkeep    - incremental maintenance: writers commit one analysis (and some feedback) per
               transaction, as the pipeline does, with the BI triggers on and off; a refresher
               folds every second: write overhead, fold time, staleness.

Prints Markdown tables and writes bench/results/bi.json (or into --results-dir). Measurements,
not tests: nothing here asserts a figure (it does check that rollups and base tables agree).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench import common
from bench.common import CpuClock, markdown_table, pct

EXECUTIVE = """query ExecutiveSummary($days: Int) { executiveSummary(periodDays: $days) {
  totalDocumentsProcessed totalActiveUsers averageProcessingTimeSeconds totalAiFeedbackItems
  averageUserSatisfaction totalProcessingCostUsd highRiskDocumentsCount documentsPerDay
  costPerDocument highRiskPercentage userProductivityScore } }"""
DAILY = """query DailySummary($from: Date!, $to: Date!) { dailySummary(from: $from, to: $to) {
  date totalAnalyses avgProcessingTimeSeconds totalCostUsd avgConfidence totalFeedbackItems
  satisfiedUsersCount } }"""
BREAKDOWNS = {
    "aiUsage (365 d, by model)": (
        "query AiUsageByModel($from: Date!, $to: Date!) { aiUsage(from: $from, to: $to) {"
        " model analyses tokensUsed costUsd } }",
        365,
    ),
    "aiUsage (90 d, by day × model × type)": (
        "query AiUsageByDay($from: Date!, $to: Date!) {"
        " aiUsage(from: $from, to: $to, interval: DAY, groupBy: [MODEL, DOCUMENT_TYPE])"
        " { periodStart model documentType costUsd } }",
        90,
    ),
    "riskDistribution (365 d, by month × type)": (
        "query RiskDistribution($from: Date!, $to: Date!) { riskDistribution(from: $from, to: $to,"
        " interval: MONTH) { periodStart documentType riskLevel documents } }",
        365,
    ),
    "feedbackAcceptance (365 d, by category × model)": (
        "query FeedbackAcceptance($from: Date!, $to: Date!) {"
        " feedbackAcceptance(from: $from, to: $to, groupBy: [CATEGORY, MODEL])"
        " { category model feedback acceptanceRate } }",
        365,
    ),
    "userActivity (31 d, by hour, reviews)": (
        "query UserActivityReviews($from: Date!, $to: Date!) { userActivity(from: $from, to: $to,"
        ' categories: ["review"]) { periodStart events activeUsers } }',
        31,
    ),
    "userActivity (365 d, by week)": (
        "query UserActivityByWeek($from: Date!, $to: Date!) { userActivity(from: $from, to: $to,"
        " interval: WEEK) { periodStart events activeUsers } }",
        365,
    ),
    "activityByHourOfDay (92 d)": (
        "query ActivityByHourOfDay($from: Date!, $to: Date!) {"
        " activityByHourOfDay(from: $from, to: $to) { hourOfDay events activeUsers } }",
        92,
    ),
}


def today() -> date:
    return datetime.now(UTC).date()


def latency_row(name: str, seconds: list[float], **extra: Any) -> dict[str, Any]:
    ms = [s * 1000 for s in seconds]
    return {
        "query": name,
        **extra,
        "runs": len(ms),
        "p50 ms": statistics.median(ms),
        "p95 ms": pct(ms, 0.95),
        "p99 ms": pct(ms, 0.99),
        "max ms": max(ms),
    }


async def timed(call: Callable[[], Awaitable[Any]], runs: int, warm: int = 3) -> list[float]:
    for _ in range(warm):
        await call()
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        seconds.append(time.perf_counter() - started)
    return seconds


# --- 1. generate and 2. build ------------------------------------------------------------------


async def generate(bench: Any, args: argparse.Namespace, report: dict[str, Any]) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from prism.demo import scale

    password_hash = await bench.services.passwords.hash_async("prism-demo-password")
    with Progress(
        TextColumn("{task.description:>20}"), BarColumn(), MofNCompleteColumn()
    ) as progress:
        tasks = {t: progress.add_task(t, total=None) for t in scale.TABLES}
        with CpuClock(bench.postmaster_pid) as cpu:
            corpus = await scale.generate(
                bench.url,
                documents=args.documents,
                password_hash=password_hash,
                days=args.days,
                seed=args.seed,
                advance=lambda table, rows: progress.advance(tasks[table], rows),
                planned=lambda table, rows: progress.update(tasks[table], total=rows),
            )
    rows = [
        {"table": table, "rows": count, "rows/s (whole run)": count / cpu.wall}
        for table, count in corpus.rows.items()
    ]
    total = sum(corpus.rows.values())
    rows.append({"table": "all", "rows": total, "rows/s (whole run)": total / cpu.wall})
    report["tables"]["generate"] = rows
    report["generate"] = {
        "seconds": cpu.wall,
        "python_cpu_seconds": cpu.python,
        "postgres_cpu_seconds": cpu.postgres,
        "organizations": [name for _, name, _ in corpus.organizations],
    }
    print(markdown_table(rows))
    print(f"generated in {cpu.wall:.0f} s")
    return corpus


async def build(bench: Any, corpus: Any, report: dict[str, Any]) -> None:
    from prism.bi import refresh as bi_refresh

    owner = await bench.owner()
    try:
        slices = await owner.fetchval(
            "SELECT count(*) FROM (SELECT DISTINCT organization_id, kind, day"
            " FROM bi_invalidations) s"
        )
        markers = await owner.fetchval("SELECT count(*) FROM bi_invalidations")
        base_rows = sum(
            [
                await owner.fetchval(f"SELECT count(*) FROM {t}")  # noqa: S608
                for t in ("documents", "analysis_results", "user_feedback", "audit_logs")
            ]
        )
        with CpuClock(bench.postmaster_pid) as cpu:
            for org_id, _, _ in [*corpus.organizations, (bench.organization_id, "", "")]:
                await bi_refresh.refresh_organization(bench.services.db, org_id)
        await owner.execute("ANALYZE")  # what autovacuum would do soon after
        rollup_rows = {
            t: await owner.fetchval(f"SELECT count(*) FROM {t}")  # noqa: S608
            for t in (
                "bi_document_daily",
                "bi_analysis_daily",
                "bi_feedback_daily",
                "bi_reviewer_daily",
                "bi_activity_hourly",
                "bi_activity_daily",
            )
        }
    finally:
        await owner.close()
    row = {
        "markers": markers,
        "day slices": slices,
        "base rows": base_rows,
        "seconds": cpu.wall,
        "slices/s": slices / cpu.wall,
        "base rows/s": base_rows / cpu.wall,
        "postgres CPU s": cpu.postgres,
        "rollup rows": sum(rollup_rows.values()),
    }
    report["tables"]["build"] = [row]
    report["rollup_rows"] = rollup_rows
    print(markdown_table([row]))
    print(markdown_table([{"table": t, "rows": n} for t, n in rollup_rows.items()]))


# --- 3. queries --------------------------------------------------------------------------------


def base_executive(scope: Any, start: date, end: date) -> Any:
    """The executive summary straight from the base tables, with the same visibility."""
    import sqlalchemy as sa

    from prism.models.analyses import Analysis
    from prism.models.audit import AuditEvent
    from prism.models.documents import Document, visible_documents
    from prism.models.enums import ProcessingStatus, RiskLevel
    from prism.models.feedback import Feedback
    from prism.models.scope import within_clearance

    lo = datetime(start.year, start.month, start.day, tzinfo=UTC)
    hi = datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1)
    completed = Document.processing_status == ProcessingStatus.COMPLETED
    documents = (
        sa.select(
            sa.func.count().filter(completed),
            sa.func.count().filter(completed, Document.risk_level == RiskLevel.HIGH),
        )
        .where(visible_documents(scope), Document.created_at >= lo, Document.created_at < hi)
        .subquery()
    )
    analyses = (
        sa.select(
            sa.func.count(),
            sa.func.sum(Analysis.duration_seconds),
            sa.func.sum(sa.func.jsonb_array_length(Analysis.feedback_items)),
            sa.func.sum(Analysis.cost_usd),
        )
        .join(Document, Document.id == Analysis.document_id)
        .where(
            visible_documents(scope),
            Analysis.organization_id == scope.organization_id,
            Analysis.completed_at >= lo,
            Analysis.completed_at < hi,
        )
        .subquery()
    )
    ratings = (
        sa.select(sa.func.count(Feedback.rating), sa.func.sum(Feedback.rating))
        .join(Document, Document.id == Feedback.document_id)
        .where(
            visible_documents(scope),
            Feedback.organization_id == scope.organization_id,
            Feedback.created_at >= lo,
            Feedback.created_at < hi,
        )
        .subquery()
    )
    users = (
        sa.select(sa.func.count(sa.distinct(AuditEvent.actor_id)))
        .where(
            AuditEvent.organization_id == scope.organization_id,
            AuditEvent.created_at >= lo,
            AuditEvent.created_at < hi,
            AuditEvent.actor_id.is_not(None),
            within_clearance(
                scope, AuditEvent.classification, AuditEvent.department, unclassified_visible=True
            ),
        )
        .subquery()
    )
    joined = documents.join(analyses, sa.true()).join(ratings, sa.true()).join(users, sa.true())
    return sa.select(documents, analyses, ratings, users).select_from(joined)


def base_daily(scope: Any, start: date, end: date) -> tuple[Any, Any]:
    import sqlalchemy as sa

    from prism.models.analyses import Analysis
    from prism.models.bi.refresh import utc_day
    from prism.models.documents import Document, visible_documents
    from prism.models.feedback import Feedback

    lo = datetime(start.year, start.month, start.day, tzinfo=UTC)
    hi = datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1)
    day = utc_day(Analysis.completed_at)
    analyses = (
        sa.select(
            day,
            sa.func.count(),
            sa.func.sum(Analysis.duration_seconds),
            sa.func.sum(Analysis.cost_usd),
            sa.func.sum(Analysis.confidence),
            sa.func.count(Analysis.confidence),
            sa.func.sum(sa.func.jsonb_array_length(Analysis.feedback_items)),
        )
        .join(Document, Document.id == Analysis.document_id)
        .where(
            visible_documents(scope),
            Analysis.organization_id == scope.organization_id,
            Analysis.completed_at >= lo,
            Analysis.completed_at < hi,
        )
        .group_by(sa.literal_column("1"))
    )
    feedback_day = utc_day(Feedback.created_at)
    satisfied = (
        sa.select(feedback_day, sa.func.count(sa.distinct(Feedback.user_id)))
        .join(Document, Document.id == Feedback.document_id)
        .where(
            visible_documents(scope),
            Feedback.organization_id == scope.organization_id,
            Feedback.created_at >= lo,
            Feedback.created_at < hi,
            Feedback.rating >= 4,
        )
        .group_by(sa.literal_column("1"))
    )
    return analyses, satisfied


async def queries(
    bench: Any, corpus: Any, args: argparse.Namespace, report: dict[str, Any]
) -> None:
    import httpx
    import sqlalchemy as sa
    from asgi_lifespan import LifespanManager

    from prism.audit import OPERATOR
    from prism.authz.principal import SCOPES, Principal
    from prism.models.bi import reads as bi_models
    from prism.models.enums import Classification, Role
    from prism.models.registered_operations import operation_hash, register_operations
    from prism.operations.persisted import split_operations
    from prism.tokens import api_tokens
    from prism.web.app import create_app

    org_id, org_name, admin_email = corpus.organizations[0]
    services = bench.services
    readers = {
        "ADMIN (everything)": (
            (
                await api_tokens.create_token(
                    services,
                    OPERATOR,
                    org_id,
                    name="bench",
                    scopes=sorted(SCOPES),
                    user_email=admin_email,
                )
            ).secret,
            Principal(org_id, None, None, Role.ADMIN, Classification.RESTRICTED, "legal", None),
        ),
        "BI token (AUDITOR, CONFIDENTIAL)": (
            (
                await api_tokens.create_token(
                    services,
                    OPERATOR,
                    org_id,
                    name="grafana",
                    scopes=["bi:read"],
                    role=Role.AUDITOR,
                    clearance=Classification.CONFIDENTIAL,
                )
            ).secret,
            Principal(org_id, None, None, Role.AUDITOR, Classification.CONFIDENTIAL, None, None),
        ),
    }
    # A BI token runs registered operations only (as Metabase or Grafana would: by sha256,
    # as `prism operations push` registers them); ADMIN sends the text.
    by_hash = {"BI token (AUDITOR, CONFIDENTIAL)"}
    schema = common.core_schema()
    operations = [
        operation
        for text in (EXECUTIVE, DAILY, *(query for query, _ in BREAKDOWNS.values()))
        for operation in split_operations(text, schema)
    ]
    async with services.db.transaction(None) as session:
        await register_operations(session, operations)
    digests = dict(
        zip(
            (EXECUTIVE, DAILY, *(query for query, _ in BREAKDOWNS.values())),
            (operation_hash(document) for _, document in operations),
            strict=True,
        )
    )
    async with services.db.transaction(org_id) as session:
        org_analyses = await session.scalar(sa.text("SELECT count(*) FROM analysis_results"))
    report["queried_organization"] = {"name": org_name, "analyses": org_analyses}
    print(
        f"\nqueries on {org_name}: {org_analyses:,} analyses of {corpus.rows['analysis_results']:,}"
    )
    end = today()
    sql_rows, gql_rows, checks = [], [], []
    for label, (_, principal) in readers.items():
        scope = principal.scope()
        # SQL: rollups against base tables, same numbers
        for name, start in (
            ("executive summary, 30 d", end - timedelta(days=29)),
            ("executive summary, 365 d", end - timedelta(days=364)),
            ("daily summary, 90 d", end - timedelta(days=89)),
        ):
            daily = name.startswith("daily")

            async def from_rollups(
                start: date = start, daily: bool = daily, scope: Any = scope
            ) -> Any:
                async with services.db.transaction(org_id) as session:
                    if daily:
                        return await bi_models.read_daily_figures(
                            session, scope, start=start, end=end
                        )
                    return await bi_models.read_executive_figures(
                        session, scope, start=start, end=end
                    )

            async def from_base(
                start: date = start, daily: bool = daily, scope: Any = scope
            ) -> Any:
                async with services.db.transaction(org_id) as session:
                    if daily:
                        analyses, satisfied = base_daily(scope, start, end)
                        return (
                            (await session.execute(analyses)).all(),
                            (await session.execute(satisfied)).all(),
                        )
                    return (await session.execute(base_executive(scope, start, end))).one()

            fast = await timed(from_rollups, args.requests)
            slow = await timed(from_base, max(5, args.requests // 10))
            checks.append(agree(await from_rollups(), await from_base(), daily, name, label))
            p95_fast, p95_slow = pct(fast, 0.95), pct(slow, 0.95)
            sql_rows.append(
                {
                    "reader": label,
                    "query": name,
                    "rollups p50 ms": statistics.median(fast) * 1000,
                    "rollups p95 ms": p95_fast * 1000,
                    "base tables p50 ms": statistics.median(slow) * 1000,
                    "base tables p95 ms": p95_slow * 1000,
                    "ratio (p95)": p95_slow / p95_fast,
                }
            )
    print("\n### SQL: rollups vs base tables\n\n" + markdown_table(sql_rows))
    # No response cache: every request runs (registered operations would be answered from it).
    uncached = services.settings.model_copy(update={"response_cache_ttl_seconds": 0})
    app = create_app(uncached, database_url=bench.url)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            for label, (token, _) in readers.items():
                headers = {"authorization": f"Bearer {token}"}

                def post(
                    query: str,
                    variables: dict[str, Any],
                    h: dict[str, str] = headers,
                    hashed: bool = label in by_hash,
                ) -> Any:
                    body: dict[str, Any] = {"query": query, "variables": variables}
                    if hashed:
                        persisted = {"version": 1, "sha256Hash": digests[query]}
                        body = {"variables": variables, "extensions": {"persistedQuery": persisted}}

                    async def call() -> None:
                        response = await http.post("/graphql", json=body, headers=h)
                        answer = response.json()
                        if answer.get("errors"):
                            raise RuntimeError(answer["errors"])

                    return call

                cases = {
                    "executiveSummary (30 d, the default)": (EXECUTIVE, {"days": 30}),
                    "executiveSummary (365 d)": (EXECUTIVE, {"days": 365}),
                    "dailySummary (90 d)": (
                        DAILY,
                        {"from": (end - timedelta(days=89)).isoformat(), "to": end.isoformat()},
                    ),
                    "dailySummary (366 d)": (
                        DAILY,
                        {"from": (end - timedelta(days=365)).isoformat(), "to": end.isoformat()},
                    ),
                }
                for name, (query, days) in BREAKDOWNS.items():
                    cases[name] = (
                        query,
                        {
                            "from": (end - timedelta(days=days - 1)).isoformat(),
                            "to": end.isoformat(),
                        },
                    )
                for name, (query, variables) in cases.items():
                    runs = (
                        args.requests
                        if "Summary" in name
                        else args.breakdown_requests or max(20, args.requests // 4)
                    )
                    seconds = await timed(post(query, variables), runs)
                    gql_rows.append(latency_row(name, seconds, reader=label))
    print("\n### GraphQL, end to end\n\n" + markdown_table(gql_rows))
    report["tables"]["sql"] = sql_rows
    report["tables"]["graphql"] = gql_rows
    report["checks"] = checks


def agree(rollups: Any, base: Any, daily: bool, name: str, reader: str) -> dict[str, Any]:
    """The rollups' numbers and the base tables' are the same (floats to 1e-9)."""
    if daily:
        analyses, satisfied = base
        by_day = {row[0]: row for row in analyses}
        users = dict(satisfied)
        same = all(
            f.analyses == (by_day[f.day][1] if f.day in by_day else 0)
            and f.cost_usd == (by_day[f.day][3] if f.day in by_day else Decimal(0))
            and f.feedback_items == (by_day[f.day][6] if f.day in by_day else 0)
            and f.satisfied_users == users.get(f.day, 0)
            for f in rollups
        )
    else:
        processed, high, analyses, duration, items, cost, rated, rating_sum, active = base
        same = (
            rollups.documents_processed == processed
            and rollups.high_risk_documents == high
            and rollups.analyses == analyses
            and abs(rollups.duration_seconds - (duration or 0)) <= 1e-9 * max(1, duration or 0)
            and rollups.feedback_items == (items or 0)
            and rollups.cost_usd == (cost or 0)
            and rollups.rated == rated
            and rollups.rating_sum == (rating_sum or 0)
            and rollups.active_users == active
        )
    print(f"{reader}, {name}: rollups {'=' if same else '≠'} base tables")
    return {"reader": reader, "query": name, "equal": same}


# --- 4. upkeep ---------------------------------------------------------------------------------


async def upkeep(bench: Any, corpus: Any, args: argparse.Namespace, report: dict[str, Any]) -> None:
    """Writers commit one analysis per transaction (plus feedback on one in four), as the
    pipeline commits sections; a refresher folds every second, as the bi.refresh job would."""
    import sqlalchemy as sa

    from prism.bi import refresh as bi_refresh
    from prism.models.analyses import Analysis
    from prism.models.bi.refresh import utc_day as bi_models_utc_day
    from prism.models.bi.tables import Invalidation
    from prism.models.documents import Document, Section
    from prism.models.enums import FeedbackAction
    from prism.models.feedback import Feedback

    org_id = corpus.organizations[0][0]
    services = bench.services
    async with services.db.transaction(org_id) as session:
        targets = (
            await session.execute(
                sa.select(Section.id, Section.document_id)
                .join(Document, Document.id == Section.document_id)
                .where(Document.deleted_at.is_(None))
                .limit(5_000)
            )
        ).all()
        reviewers = list(await session.scalars(sa.text("SELECT id FROM users LIMIT 20")))

    async def write(stop: float, counter: list[int], rng: random.Random) -> None:
        while time.perf_counter() < stop:
            section_id, document_id = rng.choice(targets)
            now = datetime.now(UTC)
            async with services.db.transaction(org_id) as session:
                analysis = Analysis(
                    organization_id=org_id,
                    document_id=document_id,
                    section_id=section_id,
                    model="prism-rules",
                    started_at=now,
                    completed_at=now,
                    duration_seconds=0.01,
                    tokens_used=0,
                    cost_usd=Decimal(0),
                    feedback_items=[{"id": "0", "category": "TERM"}],
                    job_id=uuid.uuid4(),
                )
                session.add(analysis)
                await session.flush()
                if counter[0] % 4 == 0:
                    session.add(
                        Feedback(
                            organization_id=org_id,
                            document_id=document_id,
                            section_id=section_id,
                            analysis_id=analysis.id,
                            user_id=rng.choice(reviewers),
                            action=FeedbackAction.ACCEPTED,
                            rating=5,
                        )
                    )
            counter[0] += 1

    folds: list[dict[str, float]] = []

    async def refresher(stop: float) -> None:
        while time.perf_counter() < stop:
            await asyncio.sleep(1)
            async with services.db.transaction(org_id) as session:
                oldest = await session.scalar(
                    sa.select(sa.func.min(Invalidation.created_at)).where(
                        Invalidation.organization_id == org_id
                    )
                )
            started = time.perf_counter()
            slices = await bi_refresh.refresh_organization(services.db, org_id)
            took = time.perf_counter() - started
            if slices:
                staleness = (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0
                folds.append({"seconds": took, "slices": slices, "staleness": staleness})

    async def run(writers: int, triggers: bool, refresh: bool) -> dict[str, Any]:
        owner = await bench.owner()
        try:
            verb = "ENABLE" if triggers else "DISABLE"
            for table in ("analysis_results", "user_feedback"):
                await owner.execute(f"ALTER TABLE {table} {verb} TRIGGER bi_mark_insert")
        finally:
            await owner.close()
        await bi_refresh.refresh_organization(services.db, org_id)  # nothing stale from before
        folds.clear()
        counter = [0]
        stop = time.perf_counter() + args.upkeep_seconds
        with CpuClock(bench.postmaster_pid) as cpu:
            tasks = [write(stop, counter, random.Random(n)) for n in range(writers)]  # noqa: S311
            if refresh:
                tasks.append(refresher(stop))
            await asyncio.gather(*tasks)
        seconds = [f["seconds"] * 1000 for f in folds]
        return {
            "writers": writers,
            "BI triggers": triggers,
            "refresh every 1 s": refresh,
            "analyses/s": counter[0] / cpu.wall,
            "ms/write": cpu.wall * 1000 * writers / max(counter[0], 1),
            "postgres CPU ms/write": (cpu.postgres or 0) * 1000 / max(counter[0], 1),
            "folds": len(folds),
            "fold p50 ms": statistics.median(seconds) if seconds else None,
            "fold p95 ms": pct(seconds, 0.95) if seconds else None,
            "staleness p95 s": pct([f["staleness"] for f in folds], 0.95) if folds else None,
        }

    rows = []
    for writers in (1, 4):
        rows.append(await run(writers, triggers=False, refresh=False))
        rows.append(await run(writers, triggers=True, refresh=False))
        rows.append(await run(writers, triggers=True, refresh=True))
    await bi_refresh.refresh_organization(services.db, org_id)
    # what one fold costs: recomputing a day is linear in the day's rows
    day_slices = []
    for day in (today(), today() - timedelta(days=30)):
        async with services.db.transaction(org_id) as session:
            analyses = await session.scalar(
                sa.select(sa.func.count())
                .select_from(Analysis)
                .where(bi_models_utc_day(Analysis.completed_at) == day)
            )
            session.add(Invalidation(organization_id=org_id, kind="analyses", day=day))
        started = time.perf_counter()
        await bi_refresh.refresh_organization(services.db, org_id)
        took = time.perf_counter() - started
        day_slices.append(
            {
                "day": "today (after the writers)" if day == today() else "30 days ago",
                "analyses in the day": analyses,
                "refresh ms": took * 1000,
                "analyses/s recomputed": analyses / took,
            }
        )
    report["tables"]["day_slice"] = day_slices
    print("\n" + markdown_table(day_slices))
    # one big reclassification: every analysis and feedback of 500 documents changes bucket
    async with services.db.transaction(org_id) as session:
        ids = list(
            await session.scalars(
                sa.select(Document.id).where(Document.deleted_at.is_(None)).limit(500)
            )
        )
        await session.execute(
            sa.update(Document).where(Document.id.in_(ids)).values(classification="RESTRICTED")
        )
    started = time.perf_counter()
    slices = await bi_refresh.refresh_organization(services.db, org_id)
    reclassified = {
        "documents reclassified": len(ids),
        "day slices refreshed": slices,
        "seconds": time.perf_counter() - started,
    }
    report["tables"]["upkeep"] = rows
    report["tables"]["reclassification"] = [reclassified]
    print("\n### Upkeep\n\n" + markdown_table(rows))
    print("\n" + markdown_table([reclassified]))


# --- command line ------------------------------------------------------------------------------


async def sample_load(samples: list[tuple[str, float]], phase: list[str]) -> None:
    """Other work on these two cores moves every figure: the load average as the run goes."""
    while True:
        samples.append((phase[0], os.getloadavg()[0]))
        await asyncio.sleep(5)


async def run_all(args: argparse.Namespace) -> None:
    report: dict[str, Any] = {"tables": {}}
    samples: list[tuple[str, float]] = []
    phase = ["setup"]
    sampler = asyncio.create_task(sample_load(samples, phase))
    with tempfile.TemporaryDirectory(prefix="prism-bench-bi-") as scratch:
        async with common.bench_database(Path(scratch), pool_size=10) as bench:
            phase[0] = "generate"
            corpus = await generate(bench, args, report)
            phase[0] = "build"
            await build(bench, corpus, report)
            phase[0] = "queries"
            await queries(bench, corpus, args, report)
            phase[0] = "upkeep"
            await upkeep(bench, corpus, args, report)
            environment = common.environment()
    sampler.cancel()
    load = []
    for name in ("generate", "build", "queries", "upkeep"):
        values = [v for p, v in samples if p == name]
        if values:
            load.append(
                {
                    "phase": name,
                    "load min": min(values),
                    "load median": statistics.median(values),
                    "load max": max(values),
                }
            )
    report["tables"]["load"] = load
    print("\n### Load average (1 min) during the run\n\n" + markdown_table(load))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "bi",
        "command": ".venv/bin/python bench/bi.py " + " ".join(sys.argv[1:]),
        "environment": environment,
        "parameters": {k: v for k, v in vars(args).items() if k != "results_dir"},
        **report,
    }
    path = args.results_dir / "bi.json"
    common.write_json(path, document)
    print(f"\nwritten to {common.shown(path)}")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = top.add_subparsers(dest="benchmark", required=True)
    p = sub.add_parser(
        "all",
        parents=[common.results_options()],
        help="generate, build, queries, upkeep on one fresh database",
    )
    p.add_argument(
        "--documents", type=int, default=100_000, help="documents (about 10 analyses each)"
    )
    p.add_argument("--days", type=int, default=365, help="days of history (365)")
    p.add_argument("--seed", type=int, default=1, help="generator seed (1)")
    p.add_argument("--requests", type=int, default=200, help="timed runs per summary (200)")
    p.add_argument(
        "--breakdown-requests",
        type=int,
        help="timed runs per breakdown field (default: a quarter of --requests, at least 20)",
    )
    p.add_argument("--upkeep-seconds", type=float, default=15, help="seconds per upkeep run (15)")
    return top


def main() -> int:
    args = parser().parse_args()
    asyncio.run(run_all(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
