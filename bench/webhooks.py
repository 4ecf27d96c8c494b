"""Benchmark of partners' webhooks (issue "Events"): the latency from a change's commit to its
delivery at a webhook endpoint, signed (target p95 < 1 s on an idle system).

    .venv/bin/python bench/webhooks.py                    # 100 changes, 50 ms apart
    .venv/bin/python bench/webhooks.py --changes 300 --gap 0.02 --endpoints 3

A real HTTP receiver runs on loopback in this process (PRISM_WEBHOOK_ALLOW_PRIVATE and
PRISM_WEBHOOK_ALLOW_HTTP are set for it); one organization has ``--endpoints`` webhooks to it
(each subscribed to the changes' type); a dispatcher runs as `prism worker` runs it (woken by
the outbox's NOTIFY). Audited changes are committed one at a time, ``--gap`` apart; the time
from each commit to the arrival of its event at the receiver is measured per endpoint (the
same clock: one process), and every signature is verified (Standard Webhooks, with the
`standardwebhooks` library a partner would use).

Results: bench/results/webhooks.json (or in --results-dir), summarised in webhooks.md. These
are measurements to record, not tests: nothing here asserts a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench import common
from bench.common import ms, pct


def start_receiver(arrived: dict[tuple[str, str], float], bodies: list[Any]) -> ThreadingHTTPServer:
    """A loopback HTTP server that stamps each delivery's arrival (path, webhook-id)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            now = time.perf_counter()
            headers = {k.lower(): v for k, v in self.headers.items()}
            arrived.setdefault((self.path, headers.get("webhook-id", "")), now)
            bodies.append((self.path, headers, body))
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


async def latency(bench: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    from standardwebhooks.webhooks import Webhook

    from prism import audit
    from prism.audit import OPERATOR
    from prism.authz.principal import Principal
    from prism.models.enums import Classification, Role
    from prism.webhooks.dispatcher import Dispatcher
    from prism.webhooks.endpoints import create_webhook

    settings = bench.services.settings.model_copy(
        update={"webhook_allow_private": True, "webhook_allow_http": True}
    )
    services = dataclasses.replace(bench.services, settings=settings)
    arrived: dict[tuple[str, str], float] = {}
    bodies: list[Any] = []
    server = start_receiver(arrived, bodies)
    host, port = server.server_address[:2]
    admin = Principal(
        organization_id=bench.organization_id,
        user_id=None,
        api_token_id=None,
        role=Role.ADMIN,
        clearance=Classification.RESTRICTED,
        department=None,
        scopes=None,
    )
    secrets: dict[str, str] = {}
    for n in range(args.endpoints):
        async with services.db.transaction(bench.organization_id) as session:
            made = await create_webhook(
                session,
                services,
                admin,
                OPERATOR,
                url=f"http://{host}:{port}/hook/{n}",
                event_types=["prism.job.retried"],
            )
        secrets[f"/hook/{n}"] = made.secret
    dispatcher = Dispatcher(services)
    stop = asyncio.Event()
    running = asyncio.create_task(dispatcher.run(stop))
    committed: dict[str, float] = {}
    try:
        await asyncio.sleep(0.5)  # listening
        for i in range(args.changes):
            async with services.db.transaction(bench.organization_id) as session:
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
        expected = len(committed) * args.endpoints
        deadline = time.monotonic() + 30
        while len(arrived) < expected and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await running
        server.shutdown()
        server.server_close()
    verified = 0
    for path, headers, body in bodies:
        with contextlib.suppress(Exception):
            Webhook(secrets[path]).verify(body, headers)
            verified += 1
    delays = [
        arrived[(path, event_id)] - at
        for event_id, at in committed.items()
        for path in secrets
        if (path, event_id) in arrived
    ]
    return [
        {
            "changes": len(committed),
            "endpoints": args.endpoints,
            "delivered": len(delays),
            "signatures verified": verified,
            "gap between changes ms": round(ms(args.gap), 1),
            "p50 ms": round(ms(pct(delays, 0.5)), 1) if delays else None,
            "p95 ms": round(ms(pct(delays, 0.95)), 1) if delays else None,
            "max ms": round(ms(max(delays)), 1) if delays else None,
        }
    ]


async def bench_all(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="prism-bench-webhooks-") as scratch:
        async with common.bench_database(Path(scratch), pool_size=10) as bench:
            rows = await latency(bench, args)
    common.record(
        "webhooks",
        "Webhooks",
        {"changes": args.changes, "gap": args.gap, "endpoints": args.endpoints},
        {"Latency: commit → delivered at the endpoint (dispatcher woken by NOTIFY)": rows},
        script="bench/webhooks.py",
        file_name="webhooks",
        results_dir=args.results_dir,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, parents=[common.results_options()])
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between changes")
    parser.add_argument("--endpoints", type=int, default=1)
    asyncio.run(bench_all(parser.parse_args()))


if __name__ == "__main__":
    main()
