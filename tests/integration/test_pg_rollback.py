"""domain.pg.rollback after a failure: it never waits long for a Postgres that does not answer, never raises."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import asyncpg

from domain import pg
from domain.pg import plain_dsn


@contextlib.asynccontextmanager
async def _in_a_transaction_postgres_stopped_answering(settings):
    """A connection in a transaction whose own backend is stopped (SIGSTOP): a frozen Postgres, for it alone."""
    conn = await asyncpg.connect(plain_dsn(settings.database_url))
    backend = await conn.fetchval("SELECT pg_backend_pid()")
    await conn.execute("BEGIN")
    os.kill(backend, signal.SIGSTOP)
    try:
        yield conn
    finally:
        os.kill(backend, signal.SIGCONT)  # it then finds its client gone and ends, its transaction with it


async def _timed_rollback(conn, after: BaseException | None = None) -> float:
    started = time.monotonic()
    await pg.rollback(conn, after)
    return time.monotonic() - started


async def test_a_rollback_postgres_does_not_answer_closes_the_connection_instead(settings):
    """A frozen Postgres: the statement timed out, and the ROLLBACK would wait as long again (a keyed POST took
    20 s to answer 503)."""
    async with _in_a_transaction_postgres_stopped_answering(settings) as conn:
        took = await _timed_rollback(conn)
    assert conn.is_closed()
    assert took < pg.ROLLBACK_TIMEOUT_S + 1, took


async def test_after_postgres_timed_out_the_connection_is_closed_without_asking_it_to_roll_back(settings):
    """The statement that led here timed out: a ROLLBACK would wait for the same Postgres again."""
    async with _in_a_transaction_postgres_stopped_answering(settings) as conn:
        took = await _timed_rollback(conn, TimeoutError())
    assert conn.is_closed() and took < 0.5, took


async def test_a_rollback_on_a_connection_back_in_its_pool_does_nothing(settings):
    pool = await asyncpg.create_pool(plain_dsn(settings.database_url), min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")
        await pg.rollback(conn)  # released (the pool rolled it back): no InterfaceError
        async with pool.acquire() as again:
            assert not again.is_in_transaction()
    finally:
        await pool.close()


async def test_a_connection_whose_statement_found_postgres_frozen_is_closed_not_reset_by_its_pool(settings):
    """Handed back to its pool, a connection whose statement timed out would be reset there, waiting for the same
    Postgres again: a keyed POST answered its 503 after two statement timeouts (20 s)."""
    import uuid

    from domain.pg import LazyPool, tenant_connection
    pool = LazyPool(settings.database_url, max_size=1, command_timeout_s=1.0)
    backend, started = None, 0.0
    try:
        async with tenant_connection(pool, uuid.uuid4()) as conn:
            backend = await conn.fetchval("SELECT pg_backend_pid()")
            await conn.execute("BEGIN")
            os.kill(backend, signal.SIGSTOP)
            started = time.monotonic()
            await conn.execute("SELECT 1")  # times out after 1 s
    except TimeoutError:
        took = time.monotonic() - started
    finally:
        if backend is not None:
            os.kill(backend, signal.SIGCONT)
        await pool.close()
    assert took < 1.6, took  # the statement's 1 s, not a second one for the pool's reset
