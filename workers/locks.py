"""Redis locks with a TTL, renewed while held, released only by their holder (service actions, the clock's leader)."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import secrets
import time

from domain.redis_pipe import PipelinedRedis

log = logging.getLogger("hostq.locks")

# Compare-and-act scripts: only the holder's token may renew or release. A renewal finding no key at all (Redis
# restarted and kept nothing, or the hold lapsed unrenewed) takes the lock again rather than run on without it.
_RENEW = """
local current = redis.call('get', KEYS[1])
if current == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
if current then return 0 end
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 2
"""
#: What `renew` answers when the lock had vanished and was taken again.
RETAKEN = 2
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
    """A lock on `key` held for `ttl_ms` at a time; renew before it lapses.

    Every provisioning job takes and releases one, so it speaks through the pipelined hiredis client
    (domain/redis_pipe.py): about 20 us of CPU per command, where redis-py's asyncio pool took 150.
    """

    def __init__(self, client: PipelinedRedis, key: str, ttl_ms: int, owner: str = "") -> None:
        self.client, self.key, self.ttl_ms = client, key, ttl_ms
        # The owner (a Dramatiq worker's broker id) lets others see when the holder has died.
        self.token = f"{owner}|{secrets.token_hex(16)}" if owner else secrets.token_hex(16)

    async def acquire(self) -> bool:
        """Take the lock if free (or keep it if ours)."""
        if await self.acquire_new():
            return True
        return await self.renew()

    async def acquire_new(self) -> bool:
        """Take the lock only if nobody (ourselves included) holds it."""
        return await self.client.call("SET", self.key, self.token, "NX", "PX", self.ttl_ms) is not None

    async def acquire_unless_alive(self, heartbeats_key: str, dead_before_ms: int) -> bool:
        """Take the lock if free, or from a holder whose heartbeat (in `heartbeats_key`) is older than the cutoff."""
        return bool(await self.client.call("EVAL", _TAKE, 2, self.key, heartbeats_key, self.token, self.ttl_ms,
                                           dead_before_ms))

    async def renew(self) -> int:
        """Extend our hold: 1, or RETAKEN when the lock had vanished (nobody held it) and is ours again; 0 (false)
        when another holds it."""
        return int(await self.client.call("EVAL", _RENEW, 1, self.key, self.token, self.ttl_ms))

    async def release(self) -> None:
        """Let go, only if we still hold it."""
        await self.client.call("EVAL", _RELEASE, 1, self.key, self.token)


class LockKeeper:
    """Renews every lock held in this process from one task, and lets go of them in the background.

    A provisioning job holds its service's lock for a few milliseconds; a renewing task per lock, and
    waiting for the release before the job's message is acknowledged, cost the worker more than the job's
    own Redis commands. Renewals run every `every_s` seconds (a third of the TTL or less); a release is
    sent at once on the pipelined connection, in order after the commands before it. A release that does not
    reach Redis (down for a moment) is sent again on the following turns until it does or the lock's TTL has run
    out: the lock's holder lives on and beats, so nothing else would free it before its TTL (minutes).
    """

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        # Each held lock -> the context of the attempt that took it, in which its own warnings are logged (they then
        # carry that job's request id: workers/logcontext.py).
        self._held: dict[RedisLock, contextvars.Context] = {}
        self._task: asyncio.Task | None = None
        self._releasing: set[asyncio.Task] = set()  # strong references until each release is done
        self._unreleased: dict[RedisLock, float] = {}  # a release that failed -> when its TTL ends (monotonic)

    def hold(self, lock: RedisLock) -> None:
        """Keep `lock` renewed until it is let go."""
        self._held[lock] = contextvars.copy_context()
        self._keep_turning()

    def _keep_turning(self) -> None:
        if self._task is None or self._task.done():
            # A context of its own: it serves every attempt's lock, not the one whose hold happened to start it.
            self._task = asyncio.get_running_loop().create_task(self._turns(), context=contextvars.Context())

    def let_go(self, lock: RedisLock) -> None:
        """Stop renewing `lock` and release it without waiting for Redis to answer."""
        self._held.pop(lock, None)
        task = asyncio.ensure_future(self._release(lock))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def drain(self) -> None:
        """Wait for the releases under way (a worker stopping)."""
        if self._releasing:
            await asyncio.gather(*self._releasing, return_exceptions=True)

    async def _release(self, lock: RedisLock) -> None:
        try:
            await lock.release()
        except Exception:  # Redis unreachable: again on the next turns, until the TTL frees it anyway
            self._unreleased[lock] = time.monotonic() + lock.ttl_ms / 1000
            self._keep_turning()

    async def _turns(self) -> None:
        while self._held or self._unreleased:
            await asyncio.sleep(self.every_s)
            if self._held:
                await self._renew_all()
            if self._unreleased:
                await self._release_again()

    async def _release_again(self) -> None:
        now = time.monotonic()  # one whose TTL has run out is free anyway
        self._unreleased = {lock: lapses for lock, lapses in self._unreleased.items() if lapses > now}
        due = list(self._unreleased)
        released = await asyncio.gather(*(lock.release() for lock in due), return_exceptions=True)
        for lock, outcome in zip(due, released):
            if not isinstance(outcome, BaseException):
                self._unreleased.pop(lock, None)

    async def _renew_all(self) -> None:
        held = list(self._held)
        # One turn of the loop: the pipelined client sends them in one write.
        renewed = await asyncio.gather(*(lock.renew() for lock in held), return_exceptions=True)
        failed = [outcome for outcome in renewed if isinstance(outcome, BaseException)]
        if failed:  # each lapses at its TTL unless a later turn renews it
            log.warning("could not renew %d of %d held lock(s): %s; each lapses at its TTL unless renewed",
                        len(failed), len(held), failed[0] or type(failed[0]).__name__)
        for lock, outcome in zip(held, renewed):
            holder = self._held.get(lock)
            if holder is None:
                continue
            if outcome == 0:  # taken over (this worker looked dead), or lapsed and taken by another
                holder.run(log.warning, "lock %s is no longer held by this attempt: another delivery may act on its "
                           "resource meanwhile", lock.key)
            elif outcome == RETAKEN:
                holder.run(log.warning, "lock %s had vanished (Redis restarted, or a renewal came after its TTL) and "
                           "was taken again: another delivery may have acted on its resource meanwhile", lock.key)
