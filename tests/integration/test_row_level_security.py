"""Row-level security: the app role sees a tenant's rows only when the tenant is set, none otherwise."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from domain.db import CURRENT_TENANT, make_engine, make_sessionmaker
from tests.conftest import make_tenant, signed_client
from tests.integration.helpers import add_region, customer_and_plan, order_body


@pytest.fixture
async def tenant_sessions(settings):
    """Sessions of the API's kind: scoped to CURRENT_TENANT."""
    engine = make_engine(settings.database_url, pool_size=1, scope="tenant")
    yield make_sessionmaker(engine)
    await engine.dispose()


async def _count(sessions, table: str) -> int:
    async with sessions() as session:
        return await session.scalar(text(f"SELECT count(*) FROM {table}"))


async def test_app_role_is_neither_superuser_nor_bypassrls_in_every_transaction(tenant_sessions):
    # The pool has one connection: the later transactions reuse it after a rollback and after a commit.
    for ending in ("rollback", "commit", "rollback"):
        async with tenant_sessions() as session:
            row = (await session.execute(text(
                "SELECT current_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"))).one()
            await getattr(session, ending)()
        assert tuple(row) == ("hostq_app", False, False), ending


async def test_without_the_tenant_setting_no_rows_are_visible(client, sessions, tenant_sessions):
    await client.post("/v1/customers", json={"name": "Ana", "email": "ana@example.com"})
    assert await _count(sessions, "customers") >= 1  # the platform (system scope) sees them
    token = CURRENT_TENANT.set("")
    try:
        for table in ("customers", "plans", "services", "jobs", "idempotency_keys"):
            assert await _count(tenant_sessions, table) == 0, table
    finally:
        CURRENT_TENANT.reset(token)


async def test_a_tenant_sees_and_writes_only_its_own_rows(app, client, tenant, sessions, settings, tenant_sessions):
    other = await make_tenant(sessions, settings)
    async with signed_client(app, other) as theirs:
        await theirs.post("/v1/customers", json={"name": "Eve", "email": "eve@example.com"})
    await client.post("/v1/customers", json={"name": "Ana", "email": "ana@example.com"})
    token = CURRENT_TENANT.set(str(tenant["tenant_id"]))
    try:
        async with tenant_sessions() as session:
            tenants = set((await session.scalars(text("SELECT DISTINCT tenant_id FROM customers"))).all())
            assert tenants == {tenant["tenant_id"]}
            with pytest.raises(DBAPIError, match="row-level security"):
                await session.execute(text(
                    "INSERT INTO customers (id, tenant_id, name, email, channels, created_at) "
                    "VALUES (gen_random_uuid(), :t, 'x', 'x@example.com', '{email}', now())"),
                    {"t": other["tenant_id"]})
    finally:
        CURRENT_TENANT.reset(token)


async def test_placement_counts_every_tenants_services(app, client, sessions, settings):
    region, _ = await add_region(sessions, settings, capacity=1)
    customer_id, plan = await customer_and_plan(client)
    assert (await client.post("/v1/services", json=order_body(customer_id, plan, region))).status_code == 202
    async with signed_client(app, await make_tenant(sessions, settings)) as theirs:
        their_customer, their_plan = await customer_and_plan(theirs)
        full = await theirs.post("/v1/services", json=order_body(their_customer, their_plan, region))
    assert full.status_code == 422 and full.json()["code"] == "no_capacity"


async def test_one_pooled_connection_follows_the_tenant_of_each_checkout(app, client, tenant, sessions, settings,
                                                                          tenant_sessions):
    other = await make_tenant(sessions, settings)
    async with signed_client(app, other) as theirs:
        await theirs.post("/v1/customers", json={"name": "Eve", "email": "eve@example.com"})
    await client.post("/v1/customers", json={"name": "Ana", "email": "ana@example.com"})
    for who in (tenant, other, tenant, "", other):  # the engine's pool holds a single connection
        token = CURRENT_TENANT.set(str(who["tenant_id"]) if who else "")
        try:
            async with tenant_sessions() as session:
                seen = set((await session.scalars(text("SELECT DISTINCT tenant_id FROM customers"))).all())
        finally:
            CURRENT_TENANT.reset(token)
        assert seen == ({who["tenant_id"]} if who else set())
