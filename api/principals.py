"""A short-lived, per-process cache of resolved API keys, so most requests skip the key lookup.

An entry remembers the key's and tenant's generation (Redis counters bumped by `hostq keys rotate|revoke`,
`hostq tenants update` and `PATCH /v1/tenant`). The rate limiter's single Redis round trip returns the
current generation; a mismatch drops the entry and the key is looked up again, so a revocation takes
effect on the next request. The generation includes the Redis's epoch (see api/ratelimit.py), so a Redis that
lost its data, and with it the counters, invalidates every entry. Without Redis the cache is not trusted at all,
and is emptied: a change made meanwhile could not bump its counter. Entries also expire after
TTL_S, which bounds staleness in the one race left: a lookup that reads the database just before a
revocation commits and the generation just after it is bumped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone

from domain.tenants.service import Principal

TTL_S = 10.0
MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class Cached:
    """A resolved key, the generation it was resolved under, and when it expires."""

    principal: Principal
    generation: str
    expires: float


class PrincipalCache:
    """Resolved keys by key hash."""

    def __init__(self, ttl_s: float = TTL_S, max_entries: int = MAX_ENTRIES) -> None:
        self._ttl_s, self._max = ttl_s, max_entries
        self._entries: dict[str, Cached] = {}

    def get(self, key_hash: str) -> Cached | None:
        """The live entry for this key, if any."""
        entry = self._entries.get(key_hash)
        if entry is not None and entry.expires < time.monotonic():
            self._entries.pop(key_hash, None)
            return None
        return entry

    def put(self, key_hash: str, principal: Principal, generation: str) -> None:
        """Remember a resolved key (the oldest entries go when full), never past the end of a grace period of
        its previous secret: that secret must stop working then, not up to TTL_S later."""
        if len(self._entries) >= self._max:
            for stale in list(self._entries)[: self._max // 10 or 1]:
                self._entries.pop(stale, None)
        ttl = self._ttl_s
        if principal.changes_at is not None:
            ttl = min(ttl, (principal.changes_at - datetime.now(timezone.utc)).total_seconds())
        self._entries[key_hash] = Cached(principal, generation, time.monotonic() + ttl)

    def drop(self, key_hash: str) -> None:
        """Forget a key (its generation moved on)."""
        self._entries.pop(key_hash, None)

    def clear(self) -> None:
        """Forget every key (Redis, which tells of changes, is unreachable)."""
        self._entries.clear()
