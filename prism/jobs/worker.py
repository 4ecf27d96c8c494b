"""The worker: claims jobs with FOR UPDATE SKIP LOCKED, wakes on LISTEN/NOTIFY, holds a lease
renewed by heartbeat, retries failures with exponential backoff and jitter, and on SIGTERM
finishes or gives back what it holds."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import structlog
from botocore.exceptions import ConnectionError as BotoConnectionError
from opensearchpy.exceptions import ConnectionError as OpenSearchConnectionError
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import DataError

from prism import tracing
from prism.bi import refresh as bi_refresh
from prism.db.engine import url_for_asyncpg
from prism.db.faults import log_failure, unavailable
from prism.db.notify import Listener
from prism.events.kafka import KafkaPublisher
from prism.events.relay import Relay
from prism.jobs import bi, handlers, indexing, schedules
from prism.jobs.handlers import (
    PERIODIC,
    JobRun,
    LeaseLost,
    PermanentJobError,
    fail_document,
)
from prism.models import governance as governance_models
from prism.models import jobs as job_models
from prism.models.base import utcnow
from prism.models.enums import JobState
from prism.models.jobs import Job
from prism.observability import JOB_RUNS, JOB_SECONDS, JOB_WAIT_SECONDS
from prism.search.backend import SearchUnavailable
from prism.services import Services
from prism.webhooks.dispatcher import Dispatcher

log = structlog.get_logger("prism.worker")
JOBS_CHANNEL = "prism_jobs"
Handler = Callable[[JobRun], Awaitable[None]]
HANDLERS: dict[str, Handler] = {**handlers.HANDLERS, **indexing.HANDLERS, **bi.HANDLERS}
BACKOFF_BASE_SECONDS = 10.0
BACKOFF_MAX_SECONDS = 600.0
IDLE_POLL_SECONDS = 5.0
# How often a worker asks whether periodic jobs are due (the database decides, so any number
# of workers schedule each organization's job once per interval).
SCHEDULE_CHECK_SECONDS = 300.0
# A job that failed because a dependency was away (the database, the object store, OpenSearch,
# Redis) is retried after OUTAGE_BACKOFF_SECONDS (jittered) without spending an attempt, for
# as long as the job is younger than OUTAGE_RETRY_HOURS; after that, outages count like any
# failure (so a dependency gone for good still ends the job DEAD, and its document FAILED).
OUTAGE_BACKOFF_SECONDS = (5.0, 30.0)
OUTAGE_RETRY_HOURS = 24.0
# How long a worker keeps trying to record an outage's outcome (holding the job, its lease
# renewed by the heartbeat once the database answers) before leaving it to its lease.
RECORD_RETRY_SECONDS = (0.5, 15.0)


def backoff(attempt: int) -> timedelta:
    """Full jitter: uniform in [0, min(max, base·2^attempt)] (spreads retries of a burst)."""
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(attempt - 1, 0))
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))  # noqa: S311 - not crypto


class Worker:
    def __init__(
        self,
        services: Services,
        *,
        concurrency: int | None = None,
        handlers: dict[str, Handler] | None = None,
        name: str | None = None,
    ) -> None:
        settings = services.settings
        self.services = services
        self.concurrency = concurrency or settings.worker_concurrency
        self.lease_seconds = settings.job_lease_seconds
        self.handlers = handlers or HANDLERS
        self.bi_refresh_seconds = settings.bi_refresh_seconds
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._running: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()

    # --- the loop ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, *, grace_seconds: float = 30) -> None:
        """Work until ``stop`` is set; then let running jobs finish for ``grace_seconds`` and
        give back the rest."""
        self.sweep_scratch()
        listener = await self._listen()
        heartbeat = asyncio.create_task(self._heartbeat())
        scheduler = asyncio.create_task(self._schedule_periodic())
        bi_scheduler = asyncio.create_task(self._schedule_bi_refreshes())
        fleet_scheduler = asyncio.create_task(self._schedule_fleet())
        relay = asyncio.create_task(self._relay(stop))
        webhooks = asyncio.create_task(self._webhooks(stop))
        log.info(
            "worker started",
            worker=self.name,
            concurrency=self.concurrency,
            tracing=tracing.ENABLED,
        )
        delay = 0.5
        try:
            while not stop.is_set():
                try:
                    claimed = await self._claim_free_slots()
                    delay = 0.5
                except Exception as exc:  # noqa: BLE001 - logged; the loop carries on
                    trouble("claiming failed; retrying", exc, delay=delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30)
                    continue
                if claimed == 0:
                    await self._sleep(stop)
        finally:
            try:
                await self._shutdown(grace_seconds)
            finally:
                for task in (heartbeat, scheduler, bi_scheduler, fleet_scheduler):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                # The relay ends its batch in flight (published, or rolled back) on `stop`.
                with contextlib.suppress(Exception):
                    await relay
                with contextlib.suppress(Exception):
                    await webhooks
                await listener.stop()
                log.info("worker stopped", worker=self.name)

    def sweep_scratch(self) -> int:
        """At start: extraction scratch left by killed workers (possibly decrypted files). An
        unnamed directory counts as abandoned after twice the extraction timeout, and never
        before an hour (its download may have taken a while before extraction began)."""
        timeout = self.services.settings.extract_timeout_seconds
        return handlers.sweep_scratch(max(2 * timeout, 3600))

    async def drain(self) -> int:
        """Run jobs until none is runnable (the demo, tests, `prism worker --drain`)."""
        self.sweep_scratch()
        done = 0
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            while True:
                claimed = await self._claim_free_slots()
                done += claimed
                if claimed == 0 and not self._running:
                    return done
                if self._running:
                    await asyncio.wait(
                        list(self._running.values()), return_when=asyncio.FIRST_COMPLETED
                    )
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _claim_free_slots(self) -> int:
        free = self.concurrency - len(self._running)
        if free <= 0:
            return 0
        async with self.services.db.transaction(None) as session:
            jobs = await job_models.claim_jobs(
                session, worker=self.name, limit=free, lease_seconds=self.lease_seconds
            )
        claimed_at = utcnow()
        for job in jobs:
            runnable_since = max(job.run_at, job.created_at)
            JOB_WAIT_SECONDS.labels(job.kind).observe(
                max((claimed_at - runnable_since).total_seconds(), 0.0)
            )
            stale = self._running.get(job.id)
            if stale is not None:
                # Our own lease ran out (a blocked loop) and we claimed the job again: the
                # old run can no longer finish it (fenced on the attempt); stop it.
                stale.cancel()
            self._running[job.id] = asyncio.create_task(self._execute(job))
        return len(jobs)

    async def _sleep(self, stop: asyncio.Event) -> None:
        self._wake.clear()
        waiters: list[asyncio.Future[object]] = [
            asyncio.ensure_future(self._wake.wait()),
            asyncio.ensure_future(stop.wait()),
        ]
        waiters.extend(self._running.values())  # type: ignore[arg-type]
        try:
            await asyncio.wait(
                waiters, timeout=IDLE_POLL_SECONDS, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters[:2]:
                waiter.cancel()

    async def _listen(self) -> Listener:
        """A kept LISTEN connection: a NOTIFY wakes the loop; PostgreSQL restarting costs a
        reconnect (with backoff), after which the loop looks for what was queued meanwhile.
        While it is down the worker still polls."""
        url = url_for_asyncpg(self.services.db.engine.url.render_as_string(hide_password=False))
        listener = Listener(
            url, JOBS_CHANNEL, lambda _payload: self._wake.set(), on_connect=self._wake.set
        )
        await listener.start()
        return listener

    async def _heartbeat(self) -> None:
        interval = self.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            if self._running:
                try:
                    async with self.services.db.transaction(None) as session:
                        await job_models.renew_leases(
                            session,
                            worker=self.name,
                            ids=list(self._running),
                            lease_seconds=self.lease_seconds,
                        )
                except Exception as exc:  # noqa: BLE001 - logged; renewed next beat
                    trouble("lease renewal failed", exc)

    async def _relay(self, stop: asyncio.Event) -> None:
        """The outbox relay to Kafka, when PRISM_KAFKA_BOOTSTRAP is set (PRISM_EVENTS_RELAY)."""
        settings = self.services.settings
        if not settings.runs_relay:
            return
        if not settings.kafka_bootstrap:
            log.warning("PRISM_EVENTS_RELAY is on but PRISM_KAFKA_BOOTSTRAP is not set")
            return
        await Relay(self.services.db, settings, KafkaPublisher(settings)).run(stop)

    async def _webhooks(self, stop: asyncio.Event) -> None:
        """The webhook dispatcher (PRISM_WEBHOOKS_DISPATCH)."""
        if self.services.settings.webhooks_dispatch:
            await Dispatcher(self.services).run(stop)

    async def _schedule_periodic(self) -> None:
        """Queue the governance jobs (lifecycle, data quality) of every organization once per
        PRISM_LIFECYCLE_INTERVAL_HOURS; the jobs themselves run like any other."""
        hours = self.services.settings.lifecycle_interval_hours
        if hours <= 0:
            return
        every = timedelta(hours=hours)
        while True:
            try:
                async with self.services.db.transaction(None) as session:
                    for kind in PERIODIC:
                        await governance_models.schedule_jobs(session, kind=kind, every=every)
            except Exception as exc:  # noqa: BLE001 - logged; tried next round
                trouble("scheduling periodic jobs failed", exc)
            await asyncio.sleep(min(SCHEDULE_CHECK_SECONDS, every.total_seconds()))

    async def _schedule_fleet(self) -> None:
        """The fleet-wide schedules (backups, the lake export): every worker asks, one does
        each run (``prism.jobs.schedules``). A run stopped by the worker's shutdown is left
        incomplete and made again by the next check of any worker."""
        try:
            found = schedules.fleet_schedules(self.services)
        except Exception as exc:  # noqa: BLE001 - logged; the worker runs jobs regardless
            trouble("fleet-wide schedules not started", exc)
            return
        if not found:
            return
        url = schedules.owner_url(self.services)
        pause = min([SCHEDULE_CHECK_SECONDS, *(s.every.total_seconds() for s in found)])
        while True:
            for schedule in found:
                try:
                    if await schedules.run_if_due(url, schedule):
                        log.info("scheduled run done", schedule=schedule.name, worker=self.name)
                except Exception as exc:  # noqa: BLE001 - logged; tried next round
                    trouble(f"scheduled {schedule.name} failed", exc, schedule=schedule.name)
            await asyncio.sleep(pause)

    async def _schedule_bi_refreshes(self) -> None:
        """Queue BI refreshes for organizations whose rollups went stale (any worker may; the
        database lets one at a time and never queues two for one organization)."""
        if bi_refresh.REFRESH not in self.handlers:
            return
        while True:
            await asyncio.sleep(self.bi_refresh_seconds)
            try:
                await bi_refresh.schedule_refreshes(self.services.db, self.services.settings)
            except Exception as exc:  # noqa: BLE001 - logged; tried next round
                trouble("scheduling BI refreshes failed", exc)

    async def _shutdown(self, grace_seconds: float) -> None:
        if self._running:
            await asyncio.wait(list(self._running.values()), timeout=grace_seconds)
        unfinished = [job_id for job_id, task in self._running.items() if not task.done()]
        for job_id in unfinished:
            self._running[job_id].cancel()
        if unfinished:
            async with self.services.db.transaction(None) as session:
                await job_models.release_jobs(session, worker=self.name, ids=unfinished)
            log.info("released unfinished jobs", count=len(unfinished))

    # --- one job -------------------------------------------------------------------------------

    async def _execute(self, job: Job) -> None:
        started = time.perf_counter()
        outcome = "cancelled"
        try:
            outcome = await self._traced(job)
        except Exception:
            outcome = "retried"  # not recorded: its lease runs out and it runs again
            raise
        finally:
            # A cancelled run (shutdown, or a stale run stopped) is given back: not counted.
            if outcome != "cancelled":
                JOB_RUNS.labels(job.kind, outcome).inc()
                JOB_SECONDS.labels(job.kind, outcome).observe(time.perf_counter() - started)

    async def _traced(self, job: Job) -> str:
        """Run one job, in its span (a child of the request's or job's that queued it, when
        traced) and with the request id that queued it on its log lines (this task's own)."""
        request_id = job.payload.get(tracing.REQUEST_ID)
        if isinstance(request_id, str):
            structlog.contextvars.bind_contextvars(request_id=request_id)
        attributes = {
            "prism.job.id": str(job.id),
            "prism.job.attempt": job.attempts,
            "prism.organization.id": str(job.organization_id),
        }
        with tracing.job_span(job.kind, job.payload, attributes) as span:
            return await self._run(job, span)

    async def _run(self, job: Job, span: Any) -> str:
        """Run one claimed job and record its outcome; which one (``prism_job_runs_total``)."""
        run = JobRun(job=job, worker=self.name, services=self.services)
        bound = log.bind(job_id=str(job.id), kind=job.kind, attempt=job.attempts)
        try:
            if job.attempts > job.max_attempts:
                raise PermanentJobError(f"gave up after {job.max_attempts} attempts")
            handler = self.handlers.get(job.kind)
            if handler is None:
                raise PermanentJobError(f"no handler for job kind {job.kind!r}")
            await handler(run)
            bound.info("job succeeded")
            return "succeeded"
        except asyncio.CancelledError:
            raise
        except PermanentJobError as exc:
            tracing.failed(span, exc)
            bound.warning("job failed permanently", error=str(exc))
            if await self._finish(job, JobState.DEAD, str(exc)):
                await fail_document(run, str(exc))
                return "dead"
            return "lost"
        except LeaseLost:
            bound.warning("lease lost; another run owns the job now")
            return "lost"
        except DataError as exc:
            tracing.failed(span, exc)
            # What PostgreSQL refuses to store will be refused again: no retries.
            bound.warning("job failed on data the database refuses", exc_info=True)
            if await self._finish(job, JobState.DEAD, public_error(exc)):
                await fail_document(run, "The document holds text that cannot be stored.")
                return "dead"
            return "lost"
        except Exception as exc:  # noqa: BLE001 - any failure is recorded and retried
            tracing.failed(span, exc)
            if dependency_away(exc) and utcnow() - job.created_at < timedelta(
                hours=OUTAGE_RETRY_HOURS
            ):
                trouble("job postponed: a dependency is away", exc, bound=bound)
                await self._postpone(job, public_error(exc), bound)
                return "postponed"
            trouble("job failed", exc, bound=bound)
            error = public_error(exc)
            try:
                if job.attempts >= job.max_attempts:
                    if await self._finish(job, JobState.DEAD, error):
                        await fail_document(
                            run, f"Processing failed after {job.attempts} attempts."
                        )
                        return "dead"
                    return "lost"
                if await self._finish(
                    job, JobState.FAILED, error, run_at=utcnow() + backoff(job.attempts)
                ):
                    return "retried"
                return "lost"
            except Exception as lost:
                if not unavailable(lost):
                    raise
                # The lease runs out and the job is claimed again once the database is back.
                trouble("job outcome not recorded", lost, bound=bound)
                return "retried"
        finally:
            if self._running.get(job.id) is asyncio.current_task():
                del self._running[job.id]

    async def _postpone(self, job: Job, error: str, bound: Any) -> None:
        """FAILED, runnable again after a pause, the attempt given back. While the database
        itself is away the outcome cannot be recorded: the worker keeps the job (the
        heartbeat renews its lease once the database answers) and tries again, so an outage
        neither spends the attempt nor lets the lease run out over it."""
        pause = RECORD_RETRY_SECONDS[0]
        while True:
            run_at = utcnow() + timedelta(seconds=random.uniform(*OUTAGE_BACKOFF_SECONDS))  # noqa: S311
            try:
                await self._finish(job, JobState.FAILED, error, run_at=run_at, refund=True)
                return
            except Exception as lost:
                if not unavailable(lost):
                    raise
                trouble("job outcome not recorded yet; retrying", lost, bound=bound)
            await asyncio.sleep(pause)
            pause = min(pause * 2, RECORD_RETRY_SECONDS[1])

    async def _finish(
        self,
        job: Job,
        state: JobState,
        error: str,
        run_at: datetime | None = None,
        *,
        refund: bool = False,
    ) -> bool:
        """Record the outcome; False when another run owns the job now (nothing recorded)."""
        async with self.services.db.transaction(job.organization_id) as session:
            return await job_models.finish_job(
                session,
                job_id=job.id,
                worker=self.name,
                attempt=job.attempts,
                state=state,
                error=error,
                run_at=run_at,
                refund=refund,
            )


def trouble(message: str, exc: BaseException, *, bound: Any = None, **fields: object) -> None:
    """A failure of the worker's loop or of a job, as one log line: with its stack when it is
    a bug, without when the database or OpenSearch is away (an outage would otherwise log a
    stack for every claim, renewal and job until it ends)."""
    logger = bound if bound is not None else log
    if isinstance(exc, SearchUnavailable):
        logger.warning(message, error=str(exc), search="unavailable", **fields)
    else:
        log_failure(logger, message, exc, **fields)


_AWAY_TYPES: tuple[type[BaseException], ...] = (
    BotoConnectionError,
    OpenSearchConnectionError,
    RedisConnectionError,
)


def dependency_away(exc: BaseException) -> bool:
    """The job failed because something it needs could not be reached (the database, the
    object store, OpenSearch, Redis), not because of the job: it will succeed later."""
    if unavailable(exc):
        return True
    current: BaseException | None = exc
    for _ in range(10):
        if current is None:
            return False
        if isinstance(current, _AWAY_TYPES):
            return True
        if isinstance(current, SearchUnavailable) and "unreachable" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def public_error(exc: BaseException) -> str:
    """What `job.lastError` shows clients: the kind of failure and its first line, never the
    SQL, parameters or stack (those are in the worker's log)."""
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    first_line = first_line.split("[SQL:", 1)[0]
    return f"{type(exc).__name__}: {first_line}"[:300]
