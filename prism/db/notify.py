"""PostgreSQL notifications: a LISTEN connection that survives PostgreSQL restarts
(``Listener``, the worker's wake-up call and the API's), and notifications fanned out to
in-process subscribers (``Notifications``, subscriptions over WebSocket). Every API replica
listens itself, so a change made anywhere reaches everyone."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import orjson
import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from prism.db.engine import APP_ROLE

log = structlog.get_logger("prism.notify")
QUEUE_SIZE = 100
RECONNECT_FIRST_SECONDS = 0.5
RECONNECT_MAX_SECONDS = 30.0
# How often an idle LISTEN connection is checked: one that died without a word (a network
# cut, a failover behind a proxy) is noticed within this.
KEEPALIVE_SECONDS = 30.0
PING_TIMEOUT_SECONDS = 5.0
# The event a subscriber gets when notifications may have been lost (see Notifications):
# it carries no news, it says "read the source again".
RESYNC_FIELD = "resync"
RESYNC: dict[str, Any] = {RESYNC_FIELD: True}


async def notify(session: AsyncSession, channel: str, payload: str) -> None:
    """NOTIFY ``channel`` in the session's transaction: delivered to listeners at commit."""
    await session.execute(sa.select(sa.func.pg_notify(channel, payload)))


class Listener:
    """One LISTEN connection, kept: when PostgreSQL restarts or the connection drops, it is
    re-established with exponential backoff (each loss and each reconnect logged), and an
    idle connection is pinged every ``keepalive_seconds``. Notifications sent while it was
    away are lost: ``on_connect`` runs after every (re)connect so the owner can look again
    (the worker claims what was queued meanwhile)."""

    def __init__(
        self,
        url: str,
        channel: str,
        callback: Callable[[str], None],
        *,
        on_connect: Callable[[], None] | None = None,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
    ) -> None:
        self._url = url
        self._channel = channel
        self._callback = callback
        self._on_connect = on_connect
        self._keepalive = keepalive_seconds
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connects = 0

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def start(self) -> None:
        """Connect now if PostgreSQL answers, else keep trying in the background (the owner
        works without notifications meanwhile: the worker polls)."""
        try:
            await self._connect()
        except Exception as exc:  # noqa: BLE001 - any failure to connect is retried
            log.warning(
                "LISTEN unavailable; retrying in the background",
                channel=self._channel,
                error=type(exc).__name__,
            )
        self._task = asyncio.create_task(self._keep())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._conn is not None and not self._conn.is_closed():
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=PING_TIMEOUT_SECONDS)
        self._conn = None

    async def round_trip(self, seconds: float = PING_TIMEOUT_SECONDS) -> bool:
        """A query on the LISTEN connection: when it returns True, every notification of a
        transaction committed before it was sent has been delivered to the callback
        (PostgreSQL sends them ahead of the answer). False when the connection is down or did
        not answer in time (the caller then knows nothing)."""
        conn = self._conn
        if conn is None or conn.is_closed():
            return False
        # Not wait_for: cancelling a query on a server that does not answer makes asyncpg
        # wait for the server to confirm the cancel, without limit (a frozen server never
        # does), and every caller waiting on this round trip would wait with it. A query not
        # answered in time is left running (the connection's health check replaces a
        # connection that stays silent); a later round trip meanwhile fails at once.
        query = asyncio.ensure_future(conn.execute("SELECT 1"))
        done, _ = await asyncio.wait({query}, timeout=seconds)
        if not done:
            query.add_done_callback(_retrieved)
            return False
        if query.cancelled() or query.exception() is not None:
            return False
        # The notifications that came before the answer are dispatched by call_soon, in
        # order; one turn of the loop runs them before the caller resumes.
        await asyncio.sleep(0)
        return True

    async def _connect(self) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(
            self._url, server_settings={"role": APP_ROLE}
        )
        try:
            await conn.add_listener(self._channel, self._deliver)
        except BaseException:
            conn.terminate()
            raise
        self._lost.clear()
        conn.add_termination_listener(lambda _conn: self._lost.set())
        self._conn = conn
        self.connects += 1
        if self._on_connect is not None:
            self._on_connect()

    def _deliver(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._callback(payload)

    async def _keep(self) -> None:
        delay = RECONNECT_FIRST_SECONDS
        failures = 0
        while True:
            if not self.connected:
                try:
                    await self._connect()
                except Exception as exc:  # noqa: BLE001 - retried with backoff
                    failures += 1
                    log.warning(
                        "LISTEN reconnect failed",
                        channel=self._channel,
                        error=type(exc).__name__,
                        attempt=failures,
                        retry_in=round(delay, 1),
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RECONNECT_MAX_SECONDS)
                    continue
                log.info("LISTEN re-established", channel=self._channel, attempts=failures + 1)
                delay, failures = RECONNECT_FIRST_SECONDS, 0
            await self._watch()

    async def _watch(self) -> None:
        """Return when the connection is lost: closed under us, or not answering a ping."""
        conn = self._conn
        assert conn is not None
        try:
            await asyncio.wait_for(self._lost.wait(), timeout=self._keepalive)
        except TimeoutError:
            try:
                await asyncio.wait_for(
                    conn.execute("SELECT 1"), timeout=min(PING_TIMEOUT_SECONDS, self._keepalive)
                )
                return
            except Exception as exc:  # noqa: BLE001 - a failed ping is a lost connection
                log.warning(
                    "LISTEN connection not answering; reconnecting",
                    channel=self._channel,
                    error=type(exc).__name__,
                )
        else:
            log.warning("LISTEN connection lost; reconnecting", channel=self._channel)
        conn.terminate()


class Notifications:
    """One kept LISTEN connection per process; subscribers receive the JSON payloads whose
    ``key_field`` matches the key they asked for."""

    def __init__(
        self,
        url: str,
        channel: str,
        *,
        key_field: str,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
    ) -> None:
        self._key_field = key_field
        self._subscribers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)
        self.listener = Listener(
            url,
            channel,
            self._deliver,
            on_connect=self._resync,
            keepalive_seconds=keepalive_seconds,
        )

    async def start(self) -> None:
        await self.listener.start()

    async def stop(self) -> None:
        await self.listener.stop()

    def _deliver(self, payload: str) -> None:
        try:
            event: dict[str, Any] = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if RESYNC_FIELD in event:
            return  # only this process says that
        for queue in self._subscribers.get(str(event.get(self._key_field)), ()):
            self._put(queue, event)

    def _resync(self) -> None:
        """After every (re)connect: what was notified while the LISTEN connection was away is
        lost, so every subscriber gets RESYNC (look at the source again)."""
        for queues in self._subscribers.values():
            for queue in queues:
                self._put(queue, dict(RESYNC))

    def _put(self, queue: asyncio.Queue[dict[str, Any]], event: dict[str, Any]) -> None:
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


def _retrieved(task: asyncio.Future[Any]) -> None:
    """Retrieve what a round trip left running ended with (never logged as unretrieved)."""
    if not task.cancelled():
        task.exception()
