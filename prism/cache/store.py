"""Key-value entries with a time to live, and token buckets, in Redis or in this process.

``build_store`` gives the one the settings ask for. With Redis configured, every call goes to
Redis until one fails; then the process answers from its own memory (no cached entries, its own
buckets) for a few seconds before trying Redis again, so an outage slows Prism down without
stopping it, and recovery needs nothing but Redis coming back."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import structlog
from redis import asyncio as aioredis

log = structlog.get_logger("prism.cache")


@dataclass(frozen=True)
class Bucket:
    """The outcome of taking from a token bucket."""

    allowed: bool
    remaining: int
    # Seconds until the bucket holds enough for the refused request (0 when allowed).
    retry_after: int
    # Seconds until the bucket is full again.
    reset: int


@dataclass(frozen=True)
class Rate:
    capacity: int
    refill_per_second: float


class Store(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None: ...

    async def take(self, key: str, cost: int, rate: Rate) -> Bucket:
        """Take ``cost`` tokens (a negative cost gives tokens back, up to the capacity)."""
        ...

    async def close(self) -> None: ...


def _bucket(tokens: float, cost: int, rate: Rate) -> tuple[float, Bucket]:
    """The token-bucket rule, shared by both stores (the Lua script below mirrors it)."""
    allowed = cost <= tokens
    if allowed:
        tokens = min(rate.capacity, tokens - cost)
    missing = 0.0 if allowed else cost - tokens
    return tokens, Bucket(
        allowed=allowed,
        remaining=max(0, math.floor(tokens)),
        retry_after=math.ceil(missing / rate.refill_per_second),
        reset=math.ceil((rate.capacity - tokens) / rate.refill_per_second),
    )


class LocalStore:
    """This process's memory: bounded (least recently used entries go first)."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max = max_entries

    async def get(self, key: str) -> bytes | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires, value = found
        if expires <= time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        self._entries[key] = (time.monotonic() + ttl_seconds, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def take(self, key: str, cost: int, rate: Rate) -> Bucket:
        now = time.monotonic()
        tokens, stamp = self._buckets.get(key, (float(rate.capacity), now))
        tokens = min(rate.capacity, tokens + (now - stamp) * rate.refill_per_second)
        tokens, bucket = _bucket(tokens, cost, rate)
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return bucket

    async def close(self) -> None:
        self._entries.clear()
        self._buckets.clear()


# KEYS[1]: the bucket; ARGV: cost, capacity, refill per second. Redis's own clock, so every
# server process agrees; the whole step is atomic.
_TAKE = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local cost = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local rate = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(state[1]) or capacity
local stamp = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - stamp) * rate)
local allowed = 0
if cost <= tokens then
  allowed = 1
  tokens = math.min(capacity, tokens - cost)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 1)
return {allowed, tostring(tokens)}
"""


class RedisStore:
    def __init__(self, url: str, *, prefix: str = "prism:", timeout: float = 0.5) -> None:
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._prefix = prefix
        self._take = self._redis.register_script(_TAKE)

    async def get(self, key: str) -> bytes | None:
        value: bytes | None = await self._redis.get(self._prefix + key)
        return value

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        await self._redis.set(self._prefix + key, value, ex=ttl_seconds)

    async def take(self, key: str, cost: int, rate: Rate) -> Bucket:
        allowed, tokens = await self._take(
            keys=[self._prefix + key], args=[cost, rate.capacity, rate.refill_per_second]
        )
        left = float(tokens)
        if allowed:
            return _bucket(left + cost, cost, rate)[1]
        return _bucket(left, cost, rate)[1]

    async def close(self) -> None:
        await self._redis.aclose()


class ResilientStore:
    """Redis first; this process's memory while Redis is unreachable."""

    def __init__(self, primary: RedisStore, fallback: LocalStore, retry_seconds: float) -> None:
        self._primary = primary
        self._fallback = fallback
        self._retry_seconds = retry_seconds
        self._down_until = 0.0

    @property
    def using_fallback(self) -> bool:
        return time.monotonic() < self._down_until

    def _failed(self, exc: Exception) -> None:
        """Any failure of the Redis client (an outage, a timeout, but also a reply it cannot
        parse, from a proxy or a server that is not Redis) makes Redis unusable for a while:
        the next calls use memory, and the switch is logged once."""
        if not self.using_fallback:
            log.warning(
                "redis unusable; using in-process cache and limits",
                error=str(exc)[:200],
                error_type=type(exc).__name__,
            )
        self._down_until = time.monotonic() + self._retry_seconds

    def _answered(self) -> None:
        if self._down_until:
            log.info("redis answers again; cache and limits are shared again")
            self._down_until = 0.0

    async def get(self, key: str) -> bytes | None:
        if not self.using_fallback:
            try:
                value = await self._primary.get(key)
            except Exception as exc:  # noqa: BLE001 (see _failed)
                self._failed(exc)
            else:
                self._answered()
                return value
        return await self._fallback.get(key)

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        if not self.using_fallback:
            try:
                await self._primary.set(key, value, ttl_seconds)
            except Exception as exc:  # noqa: BLE001 (see _failed)
                self._failed(exc)
            else:
                self._answered()
                return
        await self._fallback.set(key, value, ttl_seconds)

    async def take(self, key: str, cost: int, rate: Rate) -> Bucket:
        if not self.using_fallback:
            try:
                bucket = await self._primary.take(key, cost, rate)
            except Exception as exc:  # noqa: BLE001 (see _failed)
                self._failed(exc)
            else:
                self._answered()
                return bucket
        return await self._fallback.take(key, cost, rate)

    async def close(self) -> None:
        await self._primary.close()
        await self._fallback.close()


def build_store(redis_url: str | None, *, retry_seconds: float = 5.0) -> Store:
    if redis_url is None:
        return LocalStore()
    return ResilientStore(RedisStore(redis_url), LocalStore(), retry_seconds)
