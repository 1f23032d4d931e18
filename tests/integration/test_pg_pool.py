"""The plain asyncpg pools (domain/pg.py): connections a burst opened are closed once unused for a while."""

from __future__ import annotations

import asyncio
import time

from domain.pg import LazyPool, connect


async def test_connections_a_burst_opened_are_closed_once_they_sit_unused(settings):
    """Before, asyncpg's default kept them 300 s: after a burst every process held its pool's worth, and a Postgres
    at max_connections refused psql, `hostq jobs` and a restarted worker for five minutes."""
    pool = LazyPool(settings.database_url, max_size=4, scope="system", idle_close_s=0.5)
    watcher = await connect(settings.database_url)
    try:
        held = [await (await pool.get()).acquire() for _ in range(4)]  # a burst: four at once
        pids = [conn.get_server_pid() for conn in held]
        for conn in held:
            await (await pool.get()).release(conn)

        async def alive() -> int:
            return await watcher.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])", pids)

        assert await alive() == 4  # released, still open for the next requests
        deadline = time.monotonic() + 10
        while await alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert await alive() == 0
        async with (await pool.get()).acquire() as conn:  # and the pool opens a new one when asked again
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await watcher.close()
        await pool.close()


async def test_a_request_that_waits_too_long_for_a_connection_is_an_outage_not_a_hang(settings, monkeypatch):
    """Every connection held (by whatever should not hold it): the next request gives up after ACQUIRE_TIMEOUT_S
    with an error the API answers 503, rather than wait for ever; the pool then serves as before."""
    import uuid

    from domain import pg
    from domain.outages import is_outage

    monkeypatch.setattr(pg, "ACQUIRE_TIMEOUT_S", 0.3)
    pool = LazyPool(settings.database_url, max_size=1, scope="tenant")
    try:
        held = await (await pool.get()).acquire()
        started = time.monotonic()
        try:
            async with pg.tenant_connection(pool, uuid.uuid4()):
                raise AssertionError("got a connection the pool does not have")
        except TimeoutError as exc:
            assert is_outage(exc) and 0.25 < time.monotonic() - started < 2
        await (await pool.get()).release(held)
        async with pg.tenant_transaction(pool, uuid.uuid4()) as conn:
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await pool.close()
