"""Benchmark of the live `events` subscription: the latency from a change's commit to its
arrival at WebSocket subscribers (issue "Events", part 5).

    .venv/bin/python bench/subscriptions.py          # 200 changes; 1 and 20 subscribers
    .venv/bin/python bench/subscriptions.py --changes 50 --subscribers 1,5

The app runs under uvicorn on a local port (its lifespan: one LISTEN on prism_outbox, one reader
per organization); each subscriber is a real graphql-transport-ws connection (the `websockets`
client) with an ADMIN's API token (`events:read`), subscribed to `events`. Changes are audited
changes committed one at a time by this process's own services (another engine and
connections than the server's, as a worker's are), ``--gap`` seconds apart: the time from
each commit's return to the event's arrival at each subscriber is measured. Client, server
and PostgreSQL share the machine's cores: the figures include that contention.

Results: bench/results/subscriptions.json (or in --results-dir), summarised in
subscriptions.md. These are measurements to record, not tests: nothing here asserts a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench import common
from bench.common import ms, pct

SUBSCRIBE = 'subscription { events(types: ["prism.job.retried"]) { id sequence } }'


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def subscriber(
    address: str, token: str, arrived: dict[str, float], ready: asyncio.Event, count: int
) -> None:
    """One graphql-transport-ws subscriber: the arrival time of each event, by event id."""
    import websockets
    from websockets.typing import Subprotocol

    async with websockets.connect(
        f"ws://{address}/graphql", subprotocols=[Subprotocol("graphql-transport-ws")]
    ) as ws:
        init = {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
        await ws.send(json.dumps(init))
        ack = json.loads(await ws.recv())
        if ack.get("type") != "connection_ack":
            raise RuntimeError(f"not acknowledged: {ack}")
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIBE}}))
        ready.set()
        while len(arrived) < count:
            message = json.loads(await ws.recv())
            now = time.perf_counter()
            if message.get("type") != "next" or message["payload"].get("errors"):
                raise RuntimeError(f"unexpected message: {message}")
            arrived[message["payload"]["data"]["events"]["id"]] = now


async def measure(
    bench: Any, address: str, live: Any, token: str, subscribers: int, args: argparse.Namespace
) -> dict[str, Any]:
    from prism import audit
    from prism.audit import OPERATOR

    arrivals: list[dict[str, float]] = [{} for _ in range(subscribers)]
    joined = live.subscribers
    readies = [asyncio.Event() for _ in range(subscribers)]
    tasks = [
        asyncio.create_task(subscriber(address, token, arrivals[i], readies[i], args.changes))
        for i in range(subscribers)
    ]
    deadline = time.monotonic() + 30
    while live.subscribers < joined + subscribers:
        if time.monotonic() > deadline:
            raise RuntimeError("the subscriptions did not start")
        for task in tasks:
            if task.done():
                task.result()
        await asyncio.sleep(0.01)
    reads_before = live.reads
    committed: dict[str, float] = {}
    for i in range(args.changes):
        async with bench.services.db.transaction(bench.organization_id) as session:
            event = await audit.record(
                session,
                None,
                OPERATOR,
                organization_id=bench.organization_id,
                event_type="job.retry",
                category="administration",
                description=f"change {i}",
            )
        committed[str(event.id)] = time.perf_counter()
        await asyncio.sleep(args.gap)
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    delays = [
        arrived[event_id] - at
        for arrived in arrivals
        for event_id, at in committed.items()
        if event_id in arrived
    ]
    return {
        "subscribers": subscribers,
        "changes": len(committed),
        "deliveries": len(delays),
        "gap between changes ms": round(ms(args.gap), 1),
        "p50 ms": round(ms(pct(delays, 0.5)), 2),
        "p95 ms": round(ms(pct(delays, 0.95)), 2),
        "max ms": round(ms(max(delays)), 2),
        "rows read by the server": live.reads - reads_before,
    }


async def bench_all(args: argparse.Namespace) -> None:
    import uvicorn

    from prism.audit import OPERATOR
    from prism.identity import users as identity_users
    from prism.models.enums import Classification, Role
    from prism.tokens import api_tokens
    from prism.web.app import create_app

    with tempfile.TemporaryDirectory(prefix="prism-bench-subscriptions-") as scratch:
        async with common.bench_database(Path(scratch), pool_size=10) as bench:
            email = "admin@subscriptions.example"
            await identity_users.add_user(
                bench.services,
                OPERATOR,
                bench.organization_id,
                email=email,
                password="bench-password-" + uuid.uuid4().hex,
                role=Role.ADMIN,
                clearance=Classification.RESTRICTED,
                department=None,
            )
            created = await api_tokens.create_token(
                bench.services,
                OPERATOR,
                bench.organization_id,
                name="subscriber",
                scopes=["audit:read", "documents:read", "events:read"],
                user_email=email,
            )
            port = free_port()
            app = create_app(bench.services.settings, database_url=bench.url)
            server = uvicorn.Server(
                uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
            )
            serving = asyncio.create_task(server.serve())
            while not server.started:
                if serving.done():
                    serving.result()
                await asyncio.sleep(0.05)
            try:
                live = app.state.services.live_events
                rows = []
                for count in args.subscribers:
                    with common.CpuClock(bench.postmaster_pid) as clock:
                        row = await measure(
                            bench, f"127.0.0.1:{port}", live, created.secret, count, args
                        )
                    row["CPU ms a change (Python + PostgreSQL)"] = round(
                        ms((clock.python + (clock.postgres or 0.0)) / args.changes), 2
                    )
                    rows.append(row)
            finally:
                server.should_exit = True
                await asyncio.wait_for(serving, 30)
    common.record(
        "subscriptions",
        "Live events subscription",
        {"changes": args.changes, "gap": args.gap, "subscribers": args.subscribers},
        {"Latency: commit → arrival at the WebSocket subscribers": rows},
        script="bench/subscriptions.py",
        file_name="subscriptions",
        results_dir=args.results_dir,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, parents=[common.results_options()])
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between changes")
    parser.add_argument(
        "--subscribers",
        type=common.parse_ints,
        default=[1, 20],
        help="subscriber counts to measure, comma-separated",
    )
    asyncio.run(bench_all(parser.parse_args()))


if __name__ == "__main__":
    main()
