"""The workers' direct asyncpg pool: system scope, for the statements every job runs.

The ORM costs about a millisecond of CPU per transaction, and a worker's single event loop runs every
job's transactions; the per-job hot path (start an attempt, load the service, store the username, mark it
active, finish the attempt) is plain SQL on this pool instead. Its connections act as the ORM's
`scope="system"` sessions do (domain/db.py): the app role (`hostq_app`, under row-level security) and
`hostq.scope = 'system'`, set once per connection when it opens. Nothing ever sets a tenant on them, so
the pool's reset is a no-op (asyncpg's default RESET ALL would cost a round trip and drop the role).

Opened on first use, in the event loop that uses it (Dramatiq's loop thread in a worker).
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import msgspec

from domain.pg import APP_ROLE, plain_dsn

_SYSTEM = "SELECT set_config('hostq.tenant_id', '', false), set_config('hostq.scope', 'system', false)"


async def _open(conn: asyncpg.Connection) -> None:
    """A new connection: the app role, system scope, JSON columns as Python values."""
    await conn.execute(f"SET ROLE {APP_ROLE}; {_SYSTEM}")
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, schema="pg_catalog", encoder=_encode_json, decoder=msgspec.json.decode)


def _encode_json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset: nothing (asyncpg still rolls back a transaction left open); role and scope stay."""


class SystemPool:
    """An asyncpg pool for platform processes (workers), made on first use in the running loop."""

    def __init__(self, database_url: str, *, max_size: int) -> None:
        self._dsn, self._max_size = plain_dsn(database_url), max_size
        self._pool: asyncpg.Pool | None = None
        self._opening: asyncio.Future[asyncpg.Pool] | None = None

    async def get(self) -> asyncpg.Pool:
        """The pool; its connections open when first needed."""
        if self._pool is not None:
            return self._pool
        if self._opening is None:
            self._opening = asyncio.ensure_future(asyncpg.create_pool(
                self._dsn, min_size=0, max_size=self._max_size, init=_open, reset=_keep_session,
                timeout=5, command_timeout=30, server_settings={"application_name": "hostq"}))
        self._pool = await asyncio.shield(self._opening)
        return self._pool

    async def close(self) -> None:
        """Close every connection (terminating those still busy after a few seconds)."""
        pool, self._pool, self._opening = self._pool, None, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), 5)
            except TimeoutError:
                pool.terminate()
