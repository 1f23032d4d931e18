"""Redis locks with a TTL, renewed while held, released only by their holder (service actions, the clock's leader)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets

import redis.asyncio as aioredis

# Compare-and-act scripts: only the holder's token may renew or release.
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class RedisLock:
    """A lock on `key` held for `ttl_ms` at a time; renew before it lapses."""

    def __init__(self, client: aioredis.Redis, key: str, ttl_ms: int) -> None:
        self.client, self.key, self.ttl_ms = client, key, ttl_ms
        self.token = secrets.token_hex(16)

    async def acquire(self) -> bool:
        """Take the lock if free (or keep it if ours)."""
        if await self.client.set(self.key, self.token, nx=True, px=self.ttl_ms):
            return True
        return await self.renew()

    async def acquire_new(self) -> bool:
        """Take the lock only if nobody (ourselves included) holds it."""
        return bool(await self.client.set(self.key, self.token, nx=True, px=self.ttl_ms))

    async def renew(self) -> bool:
        """Extend our hold; False when the lock is no longer ours."""
        return bool(await self.client.eval(_RENEW, 1, self.key, self.token, self.ttl_ms))

    async def release(self) -> None:
        """Let go, only if we still hold it."""
        await self.client.eval(_RELEASE, 1, self.key, self.token)

    async def keep(self, every_s: float) -> None:
        """Renew every `every_s` seconds until cancelled (run as a task while the work goes on)."""
        while True:
            await asyncio.sleep(every_s)
            with contextlib.suppress(Exception):  # a missed renewal is retried at the next beat
                await self.renew()
