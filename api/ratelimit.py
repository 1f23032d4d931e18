"""Per-tenant rate limits in Redis (api-v1.md, 'Rate limits'): one GCRA script, one round trip a request.

The bucket holds N tokens (the tenant's limit per minute) and refills at N per
minute, so a burst of N passes and the next request within the minute is
refused. It is kept as GCRA (the generic cell rate algorithm): Redis stores one
number per tenant, the "theoretical arrival time" (TAT), under
`{namespace}:ratelimit:{tenant_id}`. Every request adds one emission interval
(60 s / N) to the TAT; a request is refused while the TAT would run more than
60 s ahead of now. The whole check-and-update is a Lua script run with EVALSHA,
so it is atomic across every API process sharing that Redis, and the clock is
Redis's own (`TIME`), so API hosts with skewed clocks still agree. A tenant
whose limit changes keeps its TAT: the new limit applies from the next request.

Headers, on every authenticated response that passed the limiter:
- `X-RateLimit-Limit`: N, requests per minute.
- `X-RateLimit-Remaining`: requests that would pass if sent right now.
- `X-RateLimit-Reset`: unix seconds (rounded up) at which the bucket is full
  again, i.e. when `Remaining` is back to `Limit` if nothing more is sent. This
  is GitHub's meaning ("when the quota resets"), not "when the next token
  arrives": that second meaning is `Retry-After`.
- On a refusal (429): the same headers with `Remaining: 0`, and `Retry-After`,
  whole seconds (>= 1) until one more request would pass.

Redis unreachable or slow: fail open. The request goes through without the
headers and a warning is logged (at most one every few seconds). A limiter
that fails closed would turn a Redis blip into a full API outage, while the
request itself still needs Postgres, whose outage answers 503 elsewhere. After
a failure the limiter is skipped for a short pause, so a dead Redis does not
add its timeout to every request.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from domain.outages import describe
from domain.redis_pipe import PipelinedRedis, RedisReplyError

log = logging.getLogger("hostq.api.ratelimit")

PERIOD_S = 60
_US = 1_000_000

# KEYS[1]: the bucket; KEYS[2], KEYS[3]: the calling key's and tenant's generations (bumped when a key is
# rotated or revoked, or the tenant's settings change: api/auth.py's cache of principals checks them); KEYS[4]:
# this Redis's epoch, set when first missing. A Redis that lost its data (a restart that kept nothing) has lost
# the counters too, and a change made meanwhile could not bump them: the new epoch is what tells the cache.
# ARGV: limit, period in microseconds, now in microseconds ('' = Redis's clock).
# Returns {allowed (1|0), remaining, reset (unix s, rounded up), wait until one more passes (us), generation}.
GCRA_LUA = """
local epoch = redis.call('GET', KEYS[4])
if not epoch then
  local t = redis.call('TIME')
  epoch = t[1] .. '.' .. t[2]
  redis.call('SET', KEYS[4], epoch)
end
local generation = epoch .. ':' .. (redis.call('GET', KEYS[2]) or '0') .. ':' .. (redis.call('GET', KEYS[3]) or '0')
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local now
if ARGV[3] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[3])
end
local interval = math.max(1, math.floor(period / limit))
local burst = interval * limit
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst
if now < allow_at then
  return {0, 0, math.ceil(tat / 1000000), allow_at - now, generation}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', string.format('%d', math.ceil((new_tat - now) / 1000)))
return {1, math.floor((now - allow_at) / interval), math.ceil(new_tat / 1000000), 0, generation}
"""
_GCRA_SHA = hashlib.sha1(GCRA_LUA.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Decision:
    """The limiter's answer for one request."""

    allowed: bool
    limit: int
    remaining: int
    reset: int
    retry_after: int
    generation: str = ""

    def headers(self) -> dict[str, str]:
        """The X-RateLimit-* headers, plus Retry-After when refused."""
        out = {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(self.remaining),
               "X-RateLimit-Reset": str(self.reset)}
        if not self.allowed:
            out["Retry-After"] = str(self.retry_after)
        return out


class RateLimiter:
    """Per-tenant GCRA buckets in Redis; `clock` (unix seconds) replaces Redis's clock in tests."""

    def __init__(self, client: PipelinedRedis, namespace: str, *, period_s: float = PERIOD_S,
                 clock: Callable[[], float] | None = None, pause_s: float = 5.0) -> None:
        self._client = client
        self._namespace = namespace
        self._period_us = int(period_s * _US)
        self._clock = clock
        self._pause_s = pause_s
        self._skip_until = 0.0

    async def close(self) -> None:
        """Close the limiter's Redis connection."""
        await self._client.aclose()

    def key(self, tenant_id: uuid.UUID) -> str:
        """The tenant's bucket."""
        return f"{self._namespace}:ratelimit:{tenant_id}"

    async def hit(self, tenant_id: uuid.UUID, limit: int, key_id: uuid.UUID | None = None) -> Decision | None:
        """Take one token from the tenant's bucket; None when Redis cannot answer (fail open).

        The decision also carries the key's and tenant's current generation (see GCRA_LUA).
        """
        if time.monotonic() < self._skip_until:
            return None
        limit = max(1, int(limit))
        now = "" if self._clock is None else str(int(self._clock() * _US))
        keys_and_args = (4, self.key(tenant_id), key_generation_key(self._namespace, key_id),
                         tenant_generation_key(self._namespace, tenant_id), f"{self._namespace}:auth-epoch", limit,
                         self._period_us, now)
        try:  # bounded by the client's timeout (domain/redis_pipe.py, 1 s)
            try:
                reply = await self._client.call("EVALSHA", _GCRA_SHA, *keys_and_args)
            except RedisReplyError as exc:
                if not str(exc).startswith("NOSCRIPT"):
                    raise
                reply = await self._client.call("EVAL", GCRA_LUA, *keys_and_args)  # caches it for EVALSHA
            allowed, remaining, reset, wait_us, generation = reply
        except (RedisReplyError, OSError, TimeoutError, ValueError) as exc:
            self._skip_until = time.monotonic() + self._pause_s
            log.warning("rate limiter unavailable, letting requests through for %ss: %s", self._pause_s,
                        describe(exc))
            return None
        return Decision(allowed=bool(allowed), limit=limit, remaining=int(remaining), reset=int(reset),
                        retry_after=max(1, math.ceil(int(wait_us) / _US)) if not allowed else 0,
                        generation=generation.decode() if isinstance(generation, bytes) else str(generation))


def key_generation_key(namespace: str, key_id: uuid.UUID | None) -> str:
    """Redis key counting the changes (rotation, revocation) of one API key."""
    return f"{namespace}:keygen:{key_id}"


def tenant_generation_key(namespace: str, tenant_id: uuid.UUID) -> str:
    """Redis key counting the changes of one tenant's settings (rate limit, origins)."""
    return f"{namespace}:tenantgen:{tenant_id}"
