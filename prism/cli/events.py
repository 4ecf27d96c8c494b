"""``prism events``: the outbox relay to Kafka, the webhook dispatcher, lag, and consumers."""

from __future__ import annotations

import click
from rich.console import Console

from prism.cli.app import emit, main, stop_on_signals, with_services
from prism.services import Services

console = Console(stderr=True)


@main.group()
def events() -> None:
    """Events: the outbox of every organization's changes, published to Kafka."""


@events.command("relay")
@click.option(
    "--once", is_flag=True, help="Publish what is pending, then exit (no snapshots, no pruning)."
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve this process's Prometheus metrics on 127.0.0.1:PORT (lag, throughput).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    default=None,
    help="Events per batch (default PRISM_EVENTS_BATCH_SIZE).",
)
@click.option(
    "--consumer",
    default="kafka",
    show_default=True,
    help="The cursor this relay moves: another name publishes the outbox again, independently "
    "(e.g. to a second cluster).",
)
def relay(once: bool, metrics_port: int | None, batch_size: int | None, consumer: str) -> None:
    """Publish the outbox to Kafka (PRISM_KAFKA_BOOTSTRAP) until SIGTERM; any number may run,
    each organization's stream is published by one at a time, in order."""
    from prism.events.kafka import KafkaPublisher
    from prism.events.relay import Relay

    async def work(services: Services) -> None:
        settings = services.settings
        if not settings.kafka_bootstrap:
            raise click.UsageError("PRISM_KAFKA_BOOTSTRAP is not set")
        if metrics_port is not None:
            from prometheus_client import start_http_server

            from prism.observability import scrape_registry

            start_http_server(metrics_port, addr="127.0.0.1", registry=scrape_registry())
        runner = Relay(
            services.db,
            settings,
            KafkaPublisher(settings),
            consumer=consumer,
            batch_size=batch_size,
        )
        if once:
            await runner.register()
            try:
                console.print(f"Published {await runner.drain()} events.")
            finally:
                await runner.publisher.close()
            return
        await runner.run(stop_on_signals())

    with_services(work)


@events.command("webhooks")
@click.option("--once", is_flag=True, help="Deliver what is pending and due, then exit.")
def webhooks(once: bool) -> None:
    """Deliver the outbox to the organizations' webhooks until SIGTERM (`prism worker` runs
    this too, unless PRISM_WEBHOOKS_DISPATCH=false); any number may run."""
    from prism.webhooks.dispatcher import Dispatcher

    async def work(services: Services) -> None:
        dispatcher = Dispatcher(services)
        if once:
            console.print(f"Made {await dispatcher.drain()} delivery attempts.")
            return
        await dispatcher.run(stop_on_signals())

    with_services(work)


@events.command("lag")
@click.option("--consumer", default="kafka", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def lag(consumer: str, as_json: bool) -> None:
    """Events the consumer has not handled yet, and the oldest one's time."""
    from prism.events.relay import observe_lag

    async def work(services: Services) -> None:
        found = await observe_lag(services.db, consumer)
        emit(
            {"events": found.events, "oldest": found.oldest},
            as_json,
            f"{found.events} events pending"
            + (f", oldest from {found.oldest.isoformat()}" if found.oldest else ""),
        )

    with_services(work)


@events.command("forget-consumer")
@click.argument("consumer")
def forget_consumer(consumer: str) -> None:
    """Stop holding events back for a consumer that is gone for good (its cursors go too):
    what it had not read is then pruned after the retention window."""
    from prism.models import outbox

    async def work(services: Services) -> bool:
        async with services.db.transaction(None) as session:
            return await outbox.unregister_consumer(session, consumer)

    found = with_services(work)
    console.print(f"Consumer {consumer!r} " + ("forgotten." if found else "was not registered."))
