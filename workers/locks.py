"""Redis locks with a TTL, renewed while held, released only by their holder (service actions, the clock's leader)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets

import redis.asyncio as aioredis

# Compare-and-act scripts: only the holder's token may renew or release.
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
# Take the lock if free, or if its holder's worker has stopped beating (a killed worker never releases).
_TAKE = """
local current = redis.call('get', KEYS[1])
if current then
  local holder = string.match(current, '^([^|]+)|')
  local beat = holder and redis.call('zscore', KEYS[2], holder)
  if beat and tonumber(beat) >= tonumber(ARGV[3]) then return 0 end
end
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
if current then return 2 end
return 1
"""


class RedisLock:
    """A lock on `key` held for `ttl_ms` at a time; renew before it lapses."""

    def __init__(self, client: aioredis.Redis, key: str, ttl_ms: int, owner: str = "") -> None:
        self.client, self.key, self.ttl_ms = client, key, ttl_ms
        # The owner (a Dramatiq worker's broker id) lets others see when the holder has died.
        self.token = f"{owner}|{secrets.token_hex(16)}" if owner else secrets.token_hex(16)

    async def acquire(self) -> bool:
        """Take the lock if free (or keep it if ours)."""
        if await self.client.set(self.key, self.token, nx=True, px=self.ttl_ms):
            return True
        return await self.renew()

    async def acquire_new(self) -> bool:
        """Take the lock only if nobody (ourselves included) holds it."""
        return bool(await self.client.set(self.key, self.token, nx=True, px=self.ttl_ms))

    async def acquire_unless_alive(self, heartbeats_key: str, dead_before_ms: int) -> bool:
        """Take the lock if free, or from a holder whose heartbeat (in `heartbeats_key`) is older than the cutoff."""
        return bool(await self.client.eval(_TAKE, 2, self.key, heartbeats_key, self.token, self.ttl_ms,
                                           dead_before_ms))

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
