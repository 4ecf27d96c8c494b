"""Publishing events to Kafka with aiokafka: an idempotent producer (``acks=all``), each
event keyed by its organization (one partition per organization: its order is kept), in
CloudEvents structured mode (the value is the event's JSON, ``content-type:
application/cloudevents+json``)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from prism import tracing
from prism.config import KafkaSecurity, Settings
from prism.models.outbox import Stored

CONTENT_TYPE = b"application/cloudevents+json"
# Bound on closing a producer whose brokers are away (it would try to flush what it holds).
CLOSE_TIMEOUT_SECONDS = 5.0


class PublishFailed(Exception):
    """The brokers did not acknowledge all of a batch: it is to be sent again."""


def topic_name(prefix: str, topic: str) -> str:
    return f"{prefix}{topic}"


def producer_options(settings: Settings) -> dict[str, Any]:
    """aiokafka producer options from the settings (SASL and TLS as a managed cluster needs)."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap or "",
        "client_id": "prism-outbox-relay",
        "acks": "all",
        "enable_idempotence": True,
        "request_timeout_ms": int(settings.kafka_timeout_seconds * 1000),
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "security_protocol": settings.kafka_security_protocol.value,
    }
    protocol = settings.kafka_security_protocol
    if protocol in (KafkaSecurity.SSL, KafkaSecurity.SASL_SSL):
        cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
        options["ssl_context"] = ssl.create_default_context(cafile=cafile)
    if protocol in (KafkaSecurity.SASL_PLAINTEXT, KafkaSecurity.SASL_SSL):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism.value
        user, password = settings.kafka_sasl_username, settings.kafka_sasl_password
        options["sasl_plain_username"] = user.get_secret_value() if user else None
        options["sasl_plain_password"] = password.get_secret_value() if password else None
    return options


class KafkaPublisher:
    """One producer, (re)made on demand: after a failed batch it is closed and a new one made,
    so nothing of the failed batch is left queued to arrive after what follows it."""

    def __init__(self, settings: Settings) -> None:
        self._options = producer_options(settings)
        self._prefix = settings.kafka_topic_prefix
        self._timeout = settings.kafka_timeout_seconds
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    async def _started(self) -> AIOKafkaProducer:
        async with self._starting:
            return await self._start()

    async def _start(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(**self._options)
            try:
                await asyncio.wait_for(producer.start(), self._timeout)
            except BaseException as exc:
                await _close(producer)
                raise PublishFailed(f"cannot reach the brokers ({type(exc).__name__})") from exc
            self._producer = producer
        return self._producer

    async def publish(self, events: Sequence[Stored]) -> None:
        """Send ``events`` in order and return once the brokers acknowledged every one."""
        producer = await self._started()
        try:
            async with asyncio.timeout(self._timeout):
                sent = []
                for e in events:
                    # Traced: the send's span joins the trace of the change (its traceparent).
                    with tracing.resumed(e.traceparent):
                        sent.append(
                            await producer.send(
                                topic_name(self._prefix, e.topic),
                                value=e.event,
                                key=str(e.organization_id).encode(),
                                headers=[
                                    ("content-type", CONTENT_TYPE),
                                    ("ce_id", str(e.id).encode()),
                                ],
                            )
                        )
                await asyncio.gather(*sent)
        except BaseException as exc:
            await self.reset()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise PublishFailed(f"batch not acknowledged ({type(exc).__name__})") from exc

    async def reset(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await _close(producer)

    async def close(self) -> None:
        await self.reset()


async def _close(producer: AIOKafkaProducer) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(producer.stop(), CLOSE_TIMEOUT_SECONDS)
