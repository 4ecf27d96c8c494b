"""PostgreSQL notifications fanned out to in-process subscribers (subscriptions over
WebSocket). Every API replica listens itself, so a change made anywhere reaches everyone."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import structlog

from prism.models.db import APP_ROLE

log = structlog.get_logger("prism.notify")
QUEUE_SIZE = 100


class Notifications:
    """One LISTEN connection per process; subscribers receive the JSON payloads whose
    ``key_field`` matches the key they asked for."""

    def __init__(self, url: str, channel: str, *, key_field: str) -> None:
        self._url = url
        self._channel = channel
        self._key_field = key_field
        self._subscribers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)
        self._conn: asyncpg.Connection | None = None
        self._closing = False
        self._reconnect: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._conn = await asyncpg.connect(self._url, server_settings={"role": APP_ROLE})
        await self._conn.add_listener(self._channel, self._deliver)
        self._conn.add_termination_listener(self._lost)

    async def stop(self) -> None:
        self._closing = True
        if self._reconnect is not None:
            self._reconnect.cancel()
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()

    def _lost(self, _conn: Any) -> None:
        if not self._closing:
            log.warning("notification connection lost; reconnecting", channel=self._channel)
            self._reconnect = asyncio.get_running_loop().create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        delay = 0.5
        while not self._closing:
            try:
                await self.start()
                return
            except (OSError, asyncpg.PostgresError):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)

    def _deliver(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            event: dict[str, Any] = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        for queue in self._subscribers.get(str(event.get(self._key_field)), ()):
            if queue.full():
                # A slow reader loses the oldest events, never the newest (the final state).
                queue.get_nowait()
            queue.put_nowait(event)

    @contextlib.asynccontextmanager
    async def subscribe(self, key: str) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        self._subscribers[key].add(queue)
        try:
            yield queue
        finally:
            self._subscribers[key].discard(queue)
            if not self._subscribers[key]:
                del self._subscribers[key]
