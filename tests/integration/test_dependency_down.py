"""A dependency that is down answers 503 unavailable quickly, never a hang or a 500."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace

import asyncpg
import httpx
import pytest
from sqlalchemy import text

from api.app import create_app
from api.resources import Resources
from domain.db import CURRENT_TENANT, make_engine, make_sessionmaker
from domain.pg import plain_dsn
from hostq.client import HostqSigner


async def _get_customers(settings, resources: Resources, tenant: dict) -> tuple[httpx.Response, float]:
    """A signed GET /v1/customers through an app on `resources`: the answer, and how long it took."""
    app = create_app(settings, resources)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                 auth=HostqSigner(tenant["api_key"], tenant["signing_secret"])) as client:
        started = time.monotonic()
        response = await client.get("/v1/customers")
        return response, time.monotonic() - started


async def test_database_down_is_a_quick_503(settings, tenant):
    down = replace(settings, database_url="postgresql+asyncpg://postgres@127.0.0.1:1/hostq")
    resources = Resources.open(down)
    try:
        response, elapsed = await _get_customers(down, resources, tenant)
    finally:
        await resources.close()
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "unavailable" and response.headers["retry-after"]
    assert elapsed < 6  # the connect timeout, not a hang


async def _kill_backends(settings, pids: set[int]) -> None:
    admin = await asyncpg.connect(plain_dsn(settings.database_url))
    try:
        killed = await admin.fetchval("SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM "
                                      "pg_stat_activity WHERE pid = ANY($1::int[])", list(pids))
    finally:
        await admin.close()
    assert killed == len(pids)


async def test_pooled_connections_the_database_closed_are_replaced_not_failed(settings):
    """Postgres restarted (or failed over) while the pool's connections sat idle: the next sessions get fresh
    connections, for the tenant whose scope the dead connection held and for another alike."""
    engine = make_engine(settings.database_url, pool_size=2, max_overflow=0, scope="tenant")
    sessions = make_sessionmaker(engine)
    pid = text("SELECT pg_backend_pid()")
    try:
        token = CURRENT_TENANT.set(str(uuid.uuid4()))
        try:
            async with sessions() as first, sessions() as second:
                pids = {await first.scalar(pid), await second.scalar(pid)}
            await _kill_backends(settings, pids)
            await asyncio.sleep(0.2)  # the server's close reaches the idle sockets
            async with sessions() as same_tenant:  # the scope is cached: no statement at checkout
                fresh = await same_tenant.scalar(pid)
        finally:
            CURRENT_TENANT.reset(token)
        async with sessions() as other_tenant:  # the scope changes: a statement at checkout
            other = await other_tenant.scalar(pid)
    finally:
        await engine.dispose()
    assert fresh not in pids and other not in pids


async def test_postgres_refusing_more_connections_is_a_503_not_a_500(settings, tenant):
    """'sorry, too many clients already' (max_connections, or a role's connection limit) comes wrapped by
    SQLAlchemy: still a dependency that is down, answered 503 with Retry-After."""
    role = f"hostq_full_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(plain_dsn(settings.database_url))
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 0")
        full = replace(settings, database_url=settings.database_url.replace("//postgres@", f"//{role}@"))
        resources = Resources.open(full)
        try:
            response, _ = await _get_customers(full, resources, tenant)
        finally:
            await resources.close()
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "unavailable" and response.headers["retry-after"]


def test_a_statement_cancelled_by_a_timeout_is_not_a_dependency_down():
    """Wrapped by SQLAlchemy: too many clients is Postgres out of reach (503); a statement timeout is a slow query
    to look at (500, with its trace), not a reason for clients to retry."""
    from sqlalchemy.exc import DBAPIError

    from domain.outages import is_outage as _down

    def wrapped(error: Exception) -> DBAPIError:
        adapter = RuntimeError(str(error))
        adapter.__cause__ = error
        return DBAPIError("SELECT 1", None, adapter)

    assert _down(wrapped(asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already")))
    assert not _down(wrapped(asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout")))


async def test_a_postgres_that_hangs_is_a_503_after_the_api_s_statement_timeout(settings, tenant, monkeypatch):
    """A frozen Postgres accepts the statement and never answers (here: a lock held elsewhere stands in): the
    request must end as a 503 after the API's statement timeout, not wait the workers' 30 s."""
    import api.resources

    monkeypatch.setattr(api.resources, "STATEMENT_TIMEOUT_S", 1.0)
    holder = await asyncpg.connect(plain_dsn(settings.database_url))
    resources = Resources.open(settings)
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
        response, elapsed = await _get_customers(settings, resources, tenant)
        await transaction.rollback()
    finally:
        await resources.close()
        await holder.close()
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "unavailable" and response.headers["retry-after"]
    assert elapsed < 5, elapsed


async def test_an_outage_sqlalchemy_wrapped_is_described_on_one_line_by_its_asyncpg_error(settings):
    """What the scheduler, the workers and the API log (and a job's dependency_unavailable message): before, a
    full Postgres read `DBAPIError: (sqlalchemy.dialects.postgresql.asyncpg.Error) sorry, too many clients already`
    and a second line pointing at SQLAlchemy's docs, every 2 s."""
    from domain.outages import describe, is_outage
    from tests.conftest import RUN
    role = f"hostq_test_describe_{RUN}"
    admin = await asyncpg.connect(plain_dsn(settings.database_url))
    await admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0')
    engine = make_engine(settings.database_url.replace("://postgres@", f"://{role}@"), pool_size=1)
    try:
        with pytest.raises(Exception) as refused:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
        await admin.execute(f'DROP ROLE "{role}"')
        await admin.close()
    assert is_outage(refused.value)
    assert describe(refused.value) == f'TooManyConnectionsError: too many connections for role "{role}"'
    assert describe(TimeoutError()) == "TimeoutError"
    assert describe(ValueError("two\nlines")) == "ValueError: two"
