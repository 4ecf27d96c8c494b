"""The relay against a real Kafka broker (scripts/kafka.sh; `make test` starts it): each
organization's events arrive in order, each once from a clean run; a relay killed mid-batch
loses nothing and sends again only the batch it had not seen acknowledged; a broker stopped
under writes leaves the API unaffected, and everything arrives once it is back."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from pydantic import SecretStr

from prism import audit, bootstrap
from prism.audit import OPERATOR
from prism.config import Settings
from prism.db import migrations
from prism.events import catalog
from prism.events.kafka import KafkaPublisher
from prism.events.relay import Relay, snapshot_draft
from prism.models import outbox
from prism.services import Services
from tests.conftest import NewDatabase
from tests.factories import make_tenant


@dataclass(frozen=True)
class Message:
    topic: str
    organization: str
    sequence: int
    id: str
    headers: dict[str, bytes]
    event: dict[str, Any]


@pytest.fixture(scope="module")
async def events_services(
    new_database: NewDatabase, settings: Settings, kafka_bootstrap: str
) -> AsyncIterator[Services]:
    """A database of the module's own: a relay's pass covers its organizations only."""
    url = await new_database()
    await asyncio.to_thread(migrations.upgrade, url)
    own = settings.model_copy(
        update={
            "database_url": SecretStr(url),
            "kafka_bootstrap": kafka_bootstrap,
            "kafka_timeout_seconds": 5.0,
            "events_snapshot_seconds": 0.0,
            "events_poll_seconds": 0.2,
        }
    )
    built = bootstrap.build_services(own, url)
    yield built
    await built.close()


def relay_of(
    services: Services,
    prefix: str,
    consumer: str,
    *,
    bootstrap_address: str | None = None,
    **kw: Any,
) -> Relay:
    update: dict[str, Any] = {"kafka_topic_prefix": prefix}
    if bootstrap_address:
        update["kafka_bootstrap"] = bootstrap_address
    settings = services.settings.model_copy(update=update)
    return Relay(services.db, settings, KafkaPublisher(settings), consumer=consumer, **kw)


async def consume(
    bootstrap_address: str, prefix: str, *, at_least: int, idle_seconds: float = 1.5
) -> list[Message]:
    """Every message of the prefix's topics, from the start: at least ``at_least``, then
    until nothing more arrives for ``idle_seconds``."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_address, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    messages: list[Message] = []
    try:
        await consumer.start()
        consumer.subscribe([f"{prefix}{t}" for t in catalog.TOPICS])
        deadline = time.monotonic() + 60
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=250)
            records = [r for rs in batch.values() for r in rs]
            if records:
                quiet_since = time.monotonic()
            for r in records:
                event = orjson.loads(r.value)
                messages.append(
                    Message(
                        topic=r.topic.removeprefix(prefix),
                        organization=r.key.decode(),
                        sequence=int(event["sequence"]),
                        id=event["id"],
                        headers=dict(r.headers),
                        event=event,
                    )
                )
            if len(messages) >= at_least and time.monotonic() - quiet_since >= idle_seconds:
                break
    finally:
        await consumer.stop()
    return messages


def by_organization(messages: list[Message]) -> dict[str, dict[str, list[int]]]:
    """organization -> topic -> sequences in the order they were read."""
    found: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for m in messages:
        found[m.organization][m.topic].append(m.sequence)
    return found


async def pending_total(services: Services, consumer: str) -> int:
    async with services.db.transaction(None) as session:
        return (await outbox.lag(session, consumer)).events


async def head_of(services: Services, organization_id: uuid.UUID) -> int:
    async with services.db.transaction(organization_id) as session:
        events = await outbox.read_after(session, organization_id, 0, 1_000_000)
    return events[-1].sequence if events else 0


async def add_events(services: Services, organization_id: uuid.UUID, count: int) -> None:
    """``count`` events (metrics snapshots) in one transaction, through the outbox's writer."""
    figures = outbox.Activity(
        organization_id, {"analysis": {"QUEUED": 1}}, 1, 1, 0.5, 0.9, 10, 0.01
    )
    async with services.db.transaction(organization_id) as session:
        for _ in range(count):
            await outbox.append_event(session, snapshot_draft(figures, 60, datetime.now(UTC)))


async def audited_changes(
    services: Services, organization_id: uuid.UUID, count: int
) -> list[float]:
    """``count`` audited changes, one transaction each; how long each took."""
    took = []
    for i in range(count):
        started = time.perf_counter()
        async with services.db.transaction(organization_id) as session:
            await audit.record(
                session,
                None,
                OPERATOR,
                organization_id=organization_id,
                event_type="job.retry",
                category="administration",
                description=f"change {i}",
            )
        took.append(time.perf_counter() - started)
    return took


def assert_in_order(found: dict[str, dict[str, list[int]]], organization: str, head: int) -> None:
    """Each topic's first deliveries in increasing order; together every sequence 1..head."""
    seen: set[int] = set()
    for sequences in found[organization].values():
        first = [s for i, s in enumerate(sequences) if s not in sequences[:i]]
        assert first == sorted(first)
        seen.update(sequences)
    assert seen == set(range(1, head + 1))


async def test_the_relay_publishes_each_organization_in_order(
    events_services: Services, kafka_bootstrap: str
) -> None:
    services = events_services
    tenants = [await make_tenant(services) for _ in range(2)]
    await add_events(services, tenants[0].org_id, 30)
    prefix, consumer = f"order-{uuid.uuid4().hex[:8]}.", f"order-{uuid.uuid4().hex[:8]}"
    expected = await pending_total(services, consumer)
    relay = relay_of(services, prefix, consumer, batch_size=7)
    await relay.register()
    try:
        assert await relay.drain() == expected
    finally:
        await relay.publisher.close()
    assert await pending_total(services, consumer) == 0
    messages = await consume(kafka_bootstrap, prefix, at_least=expected)
    # a clean run sends each event once
    assert len(messages) == expected == len({m.id for m in messages})
    found = by_organization(messages)
    for tenant in tenants:
        assert_in_order(found, str(tenant.org_id), await head_of(services, tenant.org_id))
    mine = [m for m in messages if m.organization == str(tenants[0].org_id)]
    assert {m.topic for m in mine} == {catalog.USER_INTERACTIONS, catalog.SYSTEM_METRICS}
    assert all(m.headers["content-type"] == b"application/cloudevents+json" for m in mine)
    assert all(m.event["organizationid"] == m.organization for m in mine)
    assert all(m.event["specversion"] == "1.0" for m in mine)


async def test_several_relays_publish_each_event_once_in_order(
    events_services: Services, kafka_bootstrap: str
) -> None:
    services = events_services
    tenants = [await make_tenant(services) for _ in range(3)]
    for tenant in tenants:
        await add_events(services, tenant.org_id, 100)
    prefix, consumer = f"many-{uuid.uuid4().hex[:8]}.", f"many-{uuid.uuid4().hex[:8]}"
    expected = await pending_total(services, consumer)
    relays = [relay_of(services, prefix, consumer, batch_size=20) for _ in range(3)]
    await relays[0].register()

    async def run(relay: Relay) -> int:
        try:
            return await relay.drain()
        finally:
            await relay.publisher.close()

    counts = await asyncio.gather(*(run(r) for r in relays))
    # whatever a relay found held by another was left to it: none is left over
    counts.append(await run(relay_of(services, prefix, consumer)))
    assert sum(counts) == expected
    messages = await consume(kafka_bootstrap, prefix, at_least=expected)
    assert len(messages) == expected == len({m.id for m in messages})
    found = by_organization(messages)
    for tenant in tenants:
        assert_in_order(found, str(tenant.org_id), await head_of(services, tenant.org_id))


async def test_a_relay_killed_mid_batch_loses_nothing_and_sends_again_only_that_batch(
    events_services: Services, kafka_bootstrap: str, repo_root: Path, tmp_path: Path
) -> None:
    services = events_services
    tenant = await make_tenant(services)
    await add_events(services, tenant.org_id, 6000)
    head = await head_of(services, tenant.org_id)
    batch = 500
    prefix, consumer = f"kill-{uuid.uuid4().hex[:8]}.", f"kill-{uuid.uuid4().hex[:8]}"
    expected = await pending_total(services, consumer)
    env = {
        **os.environ,
        "PRISM_DATABASE_URL": services.settings.database_url.get_secret_value(),  # type: ignore[union-attr]
        "PRISM_DATA_DIR": str(tmp_path),
        "PRISM_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "PRISM_KAFKA_TOPIC_PREFIX": prefix,
        "PRISM_EVENTS_SNAPSHOT_SECONDS": "0",
        "PRISM_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "prism.cli", "events", "relay"]
    child = await asyncio.create_subprocess_exec(
        *command,
        "--batch-size",
        str(batch),
        "--consumer",
        consumer,
        cwd=repo_root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    # Killed while the brokers hold part of a batch its cursor has not passed (a batch goes out
    # in several produce requests), else once a few batches are through.
    watcher = AIOKafkaConsumer(
        f"{prefix}{catalog.SYSTEM_METRICS}",
        bootstrap_servers=kafka_bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        metadata_max_age_ms=200,
    )
    await watcher.start()
    try:
        deadline = time.monotonic() + 60
        seen = cursor = 0
        while time.monotonic() < deadline and child.returncode is None:
            for records in (await watcher.getmany(timeout_ms=5)).values():
                seen = max([seen, *(int(orjson.loads(r.value)["sequence"]) for r in records)])
            async with services.db.transaction(tenant.org_id) as session:
                cursor = await outbox.read_cursor(session, consumer, tenant.org_id)
            if cursor >= batch and (seen > cursor or cursor >= 6 * batch):
                break
        assert child.returncode is None, await child.stderr.read() if child.stderr else ""
        child.send_signal(signal.SIGKILL)
        await asyncio.wait_for(child.wait(), 10)
    finally:
        await watcher.stop()
        if child.returncode is None:
            child.kill()
            await asyncio.wait_for(child.wait(), 10)
    async with services.db.transaction(tenant.org_id) as session:
        killed_at = await outbox.read_cursor(session, consumer, tenant.org_id)
    assert batch <= killed_at < head, "killed before the end of the stream"

    relay = relay_of(services, prefix, consumer, batch_size=batch)
    try:
        await relay.drain()
    finally:
        await relay.publisher.close()
    assert await pending_total(services, consumer) == 0
    messages = await consume(kafka_bootstrap, prefix, at_least=expected)
    found = by_organization(messages)
    mine = str(tenant.org_id)
    assert_in_order(found, mine, head)
    sequences = [s for seqs in found[mine].values() for s in seqs]
    twice = {s for s, n in Counter(sequences).items() if n > 1}
    # only the batch in flight when it was killed came again, and nothing more than once
    assert twice <= set(range(killed_at + 1, killed_at + batch + 1))
    assert max(Counter(sequences).values()) <= 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _broker(repo_root: Path, run_dir: Path, command: str, port: int, keep: bool) -> str:
    env = {
        **os.environ,
        "PRISM_RUN_DIR": str(run_dir),
        "KAFKA_PORT": str(port),
        "KAFKA_KEEP_DATA": "1" if keep else "0",
    }
    done = subprocess.run(
        ["bash", str(repo_root / "scripts" / "kafka.sh"), command],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def test_a_broker_stopped_under_writes_delays_events_and_loses_none(
    events_services: Services, kafka_bootstrap: str, repo_root: Path, tmp_path: Path
) -> None:
    """A broker of its own (this test stops it): the API's writes do not wait for it, the
    outbox grows while it is away, and the relay catches up when it is back."""
    services = events_services
    run_dir = tmp_path / "services"
    address = await asyncio.to_thread(_broker, repo_root, run_dir, "start", _free_port(), False)
    port = int(address.rpartition(":")[2])
    prefix, consumer = f"down-{uuid.uuid4().hex[:8]}.", f"down-{uuid.uuid4().hex[:8]}"
    tenant = await make_tenant(services)
    relay = relay_of(
        services,
        prefix,
        consumer,
        bootstrap_address=address,
        batch_size=25,
        max_backoff_seconds=1.0,
    )
    relay.settings = relay.settings.model_copy(update={"kafka_timeout_seconds": 2.0})
    relay.publisher = KafkaPublisher(relay.settings)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        await audited_changes(services, tenant.org_id, 20)
        await _until(lambda: pending_total(services, consumer), 0)

        await asyncio.to_thread(_broker, repo_root, run_dir, "stop", port, True)
        took = await audited_changes(services, tenant.org_id, 60)
        await add_events(services, tenant.org_id, 100)
        # the API never waits on Kafka: each change as fast as with the broker up
        assert max(took) < 1.0, took
        await asyncio.sleep(3)  # the relay fails its batches and backs off meanwhile
        assert await pending_total(services, consumer) >= 160
        async with services.db.transaction(None) as session:
            assert (await outbox.lag(session, consumer)).oldest is not None

        await asyncio.to_thread(_broker, repo_root, run_dir, "start", port, True)
        await audited_changes(services, tenant.org_id, 20)
        await _until(lambda: pending_total(services, consumer), 0, within=90)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        try:
            messages = await consume(address, prefix, at_least=1)
        finally:
            await asyncio.to_thread(_broker, repo_root, run_dir, "stop", port, True)
    found = by_organization(messages)
    assert_in_order(found, str(tenant.org_id), await head_of(services, tenant.org_id))


async def _until(read: Any, value: int, *, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while (current := await read()) != value:
        assert time.monotonic() < deadline, f"still {current}, waiting for {value}"
        await asyncio.sleep(0.1)


async def test_prism_worker_runs_the_relay_when_kafka_is_set(
    events_services: Services, kafka_bootstrap: str
) -> None:
    from dataclasses import replace

    from prism.jobs.worker import Worker

    prefix = f"worker-{uuid.uuid4().hex[:8]}."
    settings = events_services.settings.model_copy(update={"kafka_topic_prefix": prefix})
    assert settings.runs_relay
    assert not settings.model_copy(update={"events_relay": False}).runs_relay
    services = replace(events_services, settings=settings)
    tenant = await make_tenant(services)
    stop = asyncio.Event()
    worker = asyncio.create_task(Worker(services, concurrency=1).run(stop, grace_seconds=1))
    try:
        # the worker's relay is the default consumer ("kafka")
        await _until(lambda: pending_total(services, "kafka"), 0)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 30)
    messages = await consume(kafka_bootstrap, prefix, at_least=1)
    found = by_organization(messages)
    assert_in_order(found, str(tenant.org_id), await head_of(services, tenant.org_id))
