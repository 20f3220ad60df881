"""Hot data: small values read on every decision, changed on every event.

Redis when `TESSERA_REDIS_URL` is set (production, shared by replicas); an
in-process store otherwise (embedded default, one process). Both implement
`HotStore`. Keys are namespaced `<key_prefix><service>:` so services never
touch each other's keys and test runs never touch each other's data.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from redis import asyncio as aioredis
from redis.exceptions import WatchError

from tessera.settings import RuntimeSettings

Updater = Callable[[bytes | None], bytes | None]
ManyUpdater = Callable[[list[bytes | None]], list[bytes | None]]


class HotStore(Protocol):
    """Byte values under string keys, with expiry and atomic updates."""

    async def get(self, key: str) -> bytes | None:
        """The value under `key`, or None."""

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        """Store `value` under `key`, expiring after `ttl_s` seconds when given."""

    async def update(self, key: str, fn: Updater, ttl_s: float | None = None) -> bytes | None:
        """Atomically replace the value with `fn(old)`; None deletes. Returns the new value."""

    async def update_many(
        self, keys: Sequence[str], fn: ManyUpdater, ttl_s: float | None = None
    ) -> list[bytes | None]:
        """Atomically replace the values of `keys` with `fn(olds)`, one value per key.

        None deletes; a value equal to the old one is left as it is (expiry
        included). No other write to any of the keys lands between the read
        and the writes. Returns the new values.
        """

    async def incr(self, key: str, amount: int = 1, ttl_s: float | None = None) -> int:
        """Add `amount` to the integer under `key` and return the sum."""

    async def delete(self, *keys: str) -> int:
        """Remove `keys`; returns how many existed."""

    async def ping(self) -> None:
        """Raise when the store cannot be reached (for health)."""

    async def close(self) -> None:
        """Release connections."""


class MemoryHotStore:
    """In-process hot store. Atomic because updates never yield mid-way."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[bytes, float | None]] = {}

    def _live(self, key: str) -> bytes | None:
        entry = self._values.get(key)
        if entry is None:
            return None
        value, expires = entry
        if expires is not None and expires <= time.monotonic():
            del self._values[key]
            return None
        return value

    def _put(self, key: str, value: bytes, ttl_s: float | None) -> None:
        expires = time.monotonic() + ttl_s if ttl_s else None
        self._values[key] = (value, expires)

    async def get(self, key: str) -> bytes | None:
        return self._live(key)

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        self._put(key, value, ttl_s)

    async def update(self, key: str, fn: Updater, ttl_s: float | None = None) -> bytes | None:
        new = fn(self._live(key))
        if new is None:
            self._values.pop(key, None)
        else:
            self._put(key, new, ttl_s)
        return new

    async def update_many(
        self, keys: Sequence[str], fn: ManyUpdater, ttl_s: float | None = None
    ) -> list[bytes | None]:
        olds = [self._live(key) for key in keys]
        news = fn(olds)
        for key, old, new in zip(keys, olds, news, strict=True):
            if new == old:
                continue
            if new is None:
                self._values.pop(key, None)
            else:
                self._put(key, new, ttl_s)
        return news

    async def incr(self, key: str, amount: int = 1, ttl_s: float | None = None) -> int:
        current = self._live(key)
        total = int(current or b"0") + amount
        entry = self._values.get(key)
        keep_expiry = entry is not None and current is not None and entry[1] is not None
        if keep_expiry and entry is not None:
            self._values[key] = (str(total).encode(), entry[1])
        else:
            self._put(key, str(total).encode(), ttl_s)
        return total

    async def delete(self, *keys: str) -> int:
        return sum(self._values.pop(k, None) is not None for k in keys)

    async def ping(self) -> None:
        """Always reachable: it lives in this process."""

    async def close(self) -> None:
        self._values.clear()


def _as_bytes(value: bytes | str | None) -> bytes | None:
    """Redis answers bytes (the client never sets decode_responses)."""
    return value.encode() if isinstance(value, str) else value


class RedisHotStore:
    """Hot store on Redis; updates are optimistic WATCH/MULTI transactions."""

    def __init__(self, url: str, prefix: str) -> None:
        # Bounded waits: an unreachable Redis answers in a second, as an
        # error the runtime turns into UNAVAILABLE, instead of hanging calls.
        self._redis = aioredis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0)
        self._prefix = prefix

    def _k(self, key: str) -> str:
        return self._prefix + key

    async def get(self, key: str) -> bytes | None:
        return _as_bytes(await self._redis.get(self._k(key)))

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        await self._redis.set(self._k(key), value, px=int(ttl_s * 1000) if ttl_s else None)

    async def update(self, key: str, fn: Updater, ttl_s: float | None = None) -> bytes | None:
        full = self._k(key)
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(full)
                    new = fn(_as_bytes(await pipe.get(full)))
                    pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                    if new is None:
                        pipe.delete(full)
                    else:
                        pipe.set(full, new, px=int(ttl_s * 1000) if ttl_s else None)
                    await pipe.execute()
                    return new
                except WatchError:
                    await asyncio.sleep(0)

    async def update_many(
        self, keys: Sequence[str], fn: ManyUpdater, ttl_s: float | None = None
    ) -> list[bytes | None]:
        full = [self._k(key) for key in keys]
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(*full)
                    olds = [_as_bytes(value) for value in await pipe.mget(full)]
                    news = fn(olds)
                    pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                    for name, old, new in zip(full, olds, news, strict=True):
                        if new == old:
                            continue
                        if new is None:
                            pipe.delete(name)
                        else:
                            pipe.set(name, new, px=int(ttl_s * 1000) if ttl_s else None)
                    await pipe.execute()
                    return news
                except WatchError:
                    await asyncio.sleep(0)

    async def incr(self, key: str, amount: int = 1, ttl_s: float | None = None) -> int:
        full = self._k(key)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incrby(full, amount)
            if ttl_s:
                pipe.expire(full, max(1, int(ttl_s)), nx=True)
            total, *_ = await pipe.execute()
        return int(total)

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        count: int = await self._redis.delete(*(self._k(k) for k in keys))
        return count

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()


def open_hot_store(settings: RuntimeSettings, service: str) -> HotStore:
    """The hot store the settings ask for, namespaced to `service`."""
    if settings.redis_url:
        return RedisHotStore(settings.redis_url, f"{settings.key_prefix}{service}:")
    return MemoryHotStore()
