"""Fleet-wide schedules: work done once per interval for the whole fleet, not per
organization (backups, PRISM_BACKUP_INTERVAL_HOURS; the lake export, PRISM_LAKE_INTERVAL_HOURS).

Every worker asks every few minutes. The one that takes the schedule's fleet lock (a
PostgreSQL session advisory lock, ``prism.db.locks``) reads when the work last finished, from
where the work writes its result (the newest backup's header at the backup destination; the
lake's run record), and does the work if it is due; the others, finding the lock taken,
skip. The lock is held for the whole run and the result is written before it is released, so
the next worker to take it sees the run: each interval's run is made by one worker. A worker
that dies mid-run loses its connection and the lock with it; the run's leftovers are
incomplete (a backup without its header) and the next check runs again."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from prism.db.locks import fleet_lock
from prism.governance import backup, lake
from prism.models.base import utcnow
from prism.services import Services
from prism.storage import backup_store

BACKUP = "backup"
LAKE = "lake.export"


@dataclass(frozen=True)
class Schedule:
    name: str
    every: timedelta
    # When the work last finished (None: never), read from what the work writes.
    last_run: Callable[[], Awaitable[datetime | None]]
    work: Callable[[], Awaitable[object]]


async def run_if_due(url: str, schedule: Schedule, *, now: Callable[[], datetime] = utcnow) -> bool:
    """Do ``schedule``'s work if it is due and no other process is doing it: True if this
    call did it."""
    async with fleet_lock(url, schedule.name) as held:
        if not held:
            return False
        last = await schedule.last_run()
        if last is not None and now() - last < schedule.every:
            return False
        await schedule.work()
        return True


def owner_url(services: Services) -> str:
    return services.db.engine.url.render_as_string(hide_password=False)


def backup_schedule(services: Services) -> Schedule | None:
    settings = services.settings
    if settings.backup_interval_hours <= 0:
        return None
    destination = backup_store(settings)

    async def work() -> object:
        return await backup.create_backup(
            owner_url(services),
            services.objects,
            destination,
            services.envelope.keks,
            keep=settings.backup_keep,
            bin_dir=settings.pg_bin_dir,
        )

    return Schedule(
        name=BACKUP,
        every=timedelta(hours=settings.backup_interval_hours),
        last_run=lambda: backup.latest_time(destination, services.envelope.keks),
        work=work,
    )


def lake_schedule(services: Services) -> Schedule | None:
    settings = services.settings
    if settings.lake_interval_hours <= 0:
        return None
    periods = lake.LakePeriods.of(settings)

    async def work() -> object:
        return await lake.scheduled_export(services.db, services.objects, periods)

    return Schedule(
        name=LAKE,
        every=timedelta(hours=settings.lake_interval_hours),
        last_run=lambda: lake.last_scheduled_run(services.objects),
        work=work,
    )


def fleet_schedules(services: Services) -> list[Schedule]:
    """The schedules switched on by the settings."""
    found = [backup_schedule(services), lake_schedule(services)]
    return [schedule for schedule in found if schedule is not None]
