"""`POST /v1/services` on the plain asyncpg path: the rows it writes, the outbox rule (a job reaches the broker
only once its order committed, exactly once), row-level security, and placement in SQL."""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from sqlalchemy import func, select

from domain.catalog.models import Plan
from domain.errors import ValidationFailed
from domain.idempotency.models import IdempotencyKey
from domain.jobs.models import Job
from domain.pg import plain_dsn, tenant_connection
from domain.provisioning import rules as placement_rules
from domain.provisioning.service import PLACE
from domain.services import service as services
from domain.services.models import Service
from tests.conftest import make_tenant, signed_client
from tests.integration.helpers import add_region, customer_and_plan, order_body

FAIL_AT_COMMIT = "fail-at-commit-"


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"k-{uuid.uuid4()}"}


def queue(settings, region: str) -> str:
    return f"{settings.namespace}:dramatiq:provisioning.{region}"


async def _jobs_of(sessions, tenant_id) -> list[Job]:
    async with sessions() as session:
        return list((await session.scalars(select(Job).where(Job.tenant_id == tenant_id))).all())


def _committed(dsn: str, job_id: uuid.UUID) -> bool:
    """Whether another connection sees the job's row now, i.e. its transaction has committed. Runs in a thread
    with its own event loop: the caller is the broker's (synchronous) enqueue, inside the app's loop."""
    async def check() -> bool:
        conn = await asyncpg.connect(dsn)  # the superuser: no row-level security in the way
        try:
            return await conn.fetchval("SELECT count(*) FROM jobs WHERE id = $1", job_id) == 1
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as thread:
        return thread.submit(lambda: asyncio.run(check())).result()


@pytest.fixture
def sent(resources, settings, monkeypatch) -> list[tuple[uuid.UUID, bool]]:
    """Every message the API enqueues from now on: (job id, whether its row was committed at that moment)."""
    real, seen, dsn = resources.broker.enqueue, [], plain_dsn(settings.database_url)

    def enqueue(message, *, delay=None):
        job_id = uuid.UUID(message.options["job_id"])
        seen.append((job_id, _committed(dsn, job_id)))
        return real(message, delay=delay)

    monkeypatch.setattr(resources.broker, "enqueue", enqueue)
    return seen


@pytest.fixture
async def fail_at_commit(settings):
    """Services whose domain starts with FAIL_AT_COMMIT are refused when their transaction commits (a deferred
    constraint trigger): the order's statement succeeds, its COMMIT fails."""
    conn = await asyncpg.connect(plain_dsn(settings.database_url))
    await conn.execute(f"""
        CREATE FUNCTION hostq_test_fail_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.domain LIKE '{FAIL_AT_COMMIT}%' THEN RAISE EXCEPTION 'refused at commit'; END IF;
          RETURN NULL;
        END $$;
        CREATE CONSTRAINT TRIGGER hostq_test_fail_at_commit AFTER INSERT ON services
          DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION hostq_test_fail_at_commit()""")
    try:
        yield
    finally:
        await conn.execute("DROP TRIGGER hostq_test_fail_at_commit ON services; "
                           "DROP FUNCTION hostq_test_fail_at_commit()")
        await conn.close()


@pytest.mark.parametrize("keyed", [False, True], ids=["unkeyed", "keyed"])
async def test_an_order_whose_commit_fails_sends_nothing(keyed, client, tenant, sessions, settings, resources, sent,
                                                         fail_at_commit):
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    body = order_body(customer_id, plan, region, domain=f"{FAIL_AT_COMMIT}{uuid.uuid4().hex[:8]}.example.com")
    answer = await client.post("/v1/services", json=body, headers=key() if keyed else {})
    assert answer.status_code == 500 and answer.json()["code"] == "internal_error", answer.text
    assert sent == [] and await resources.redis.llen(queue(settings, region)) == 0
    assert await _jobs_of(sessions, tenant["tenant_id"]) == []


async def test_a_keyed_order_that_fails_after_its_statement_sends_nothing_and_can_be_retried(
        client, tenant, sessions, settings, resources, sent, monkeypatch):
    # The keyed order's rows are written, then the handler fails before the middleware's COMMIT: all rolls back.
    from api.services import controller
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    body, headers = order_body(customer_id, plan, region), key()

    def broken(_body):
        raise RuntimeError("rendering failed")

    with monkeypatch.context() as patch:
        patch.setattr(controller, "accepted", broken)
        failed = await client.post("/v1/services", json=body, headers=headers)
    assert failed.status_code == 500, failed.text
    assert sent == [] and await _jobs_of(sessions, tenant["tenant_id"]) == []

    retried = await client.post("/v1/services", json=body, headers=headers)
    assert retried.status_code == 202 and "idempotent-replayed" not in retried.headers, retried.text
    assert [job_id for job_id, _ in sent] == [uuid.UUID(retried.json()["job"]["id"])]


@pytest.mark.parametrize("keyed", [False, True], ids=["unkeyed", "keyed"])
async def test_a_committed_order_sends_its_job_once_after_the_commit_and_marks_it(keyed, client, tenant, sessions,
                                                                                 settings, resources, sent):
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    body, headers = order_body(customer_id, plan, region), key() if keyed else {}
    first = await client.post("/v1/services", json=body, headers=headers)
    assert first.status_code == 202, first.text
    job_id = uuid.UUID(first.json()["job"]["id"])
    # Sent once, and only when another connection could already see the job: after the commit.
    assert sent == [(job_id, True)]
    assert await resources.redis.llen(queue(settings, region)) == 1
    if keyed:  # the replay answers the same job and sends nothing more
        replay = await client.post("/v1/services", json=body, headers=headers)
        assert replay.headers["idempotent-replayed"] == "true" and replay.content == first.content
        assert sent == [(job_id, True)] and await resources.redis.llen(queue(settings, region)) == 1
    for _ in range(100):  # marked dispatched by the API's batched marks, as on the ORM path
        async with sessions() as session:
            if (await session.get(Job, job_id)).dispatched_at is not None:
                break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the sent job was never marked dispatched")
    assert [job.id for job in await _jobs_of(sessions, tenant["tenant_id"])] == [job_id]


async def test_a_refused_keyed_order_sends_nothing_and_its_refusal_is_replayed(client, tenant, sessions, settings,
                                                                               sent):
    region, _ = await add_region(sessions, settings, capacity=1)
    customer_id, plan = await customer_and_plan(client)
    assert (await client.post("/v1/services", json=order_body(customer_id, plan, region))).status_code == 202
    body, headers = order_body(customer_id, plan, region), key()
    full = await client.post("/v1/services", json=body, headers=headers)
    again = await client.post("/v1/services", json=body, headers=headers)
    assert full.status_code == again.status_code == 422 and full.json()["code"] == "no_capacity"
    assert again.headers["idempotent-replayed"] == "true" and again.content == full.content
    assert len(sent) == 1 and len(await _jobs_of(sessions, tenant["tenant_id"])) == 1
    async with sessions() as session:
        [stored] = (await session.scalars(select(IdempotencyKey).where(
            IdempotencyKey.tenant_id == tenant["tenant_id"]))).all()
    assert stored.response_status == 422


async def test_an_order_records_the_rows_the_orm_path_recorded(client, tenant, sessions, settings):
    region, server_id = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    domain = f"D{uuid.uuid4().hex[:8]}.Example.com."
    response = await client.post("/v1/services", json=order_body(customer_id, plan, region, domain=domain,
                                                                  username="anauser"),
                                 headers={"X-Request-Id": "order-rows"})
    assert response.status_code == 202, response.text
    answer = response.json()
    async with sessions() as session:
        service = await session.get(Service, uuid.UUID(answer["service"]["id"]))
        job = await session.get(Job, uuid.UUID(answer["job"]["id"]))
        plan_row = await session.scalar(select(Plan).where(Plan.tenant_id == tenant["tenant_id"], Plan.code == plan))
    assert (service.tenant_id, service.customer_id, service.plan_id, service.plan_code) == (
        tenant["tenant_id"], uuid.UUID(customer_id), plan_row.id, plan)
    assert (service.domain, service.region, service.billing_cycle, service.status, service.username) == (
        domain.lower().rstrip("."), region, "monthly", "provisioning", "anauser")
    assert (service.server_id, service.last_job_id, service.suspended_reason, service.create_attempted_at) == (
        server_id, job.id, None, None)
    assert service.updated_at is not None
    assert (job.kind, job.queue, job.status, job.attempts, job.round, job.max_attempts) == (
        "provision.create", f"provisioning.{region}", "queued", 0, 1, settings.job_max_attempts)
    assert (job.tenant_id, job.resource_type, job.resource_id, job.args, job.request_id) == (
        tenant["tenant_id"], "service", service.id, {}, "order-rows")
    assert (job.result, job.error_code, job.error_message, job.started_at, job.finished_at, job.next_attempt_at,
            job.updated_at) == (None,) * 7
    # The answer is what was stored, to the whole second as api-v1.md writes times (`2026-11-22T15:04:05Z`).
    for shown, stored in ((answer["service"]["created_at"], service.created_at),
                          (answer["job"]["created_at"], job.created_at)):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", shown), shown
        assert _instant(shown) == stored.replace(microsecond=0)
    assert answer["service"]["next_due_date"] == service.next_due_date.isoformat()


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_the_first_due_date_is_the_order_date_in_the_tenants_time_zone(client, sessions, settings):
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    # 25 hours apart: at any instant these two zones are on different calendar days.
    for zone in ("Pacific/Kiritimati", "Pacific/Pago_Pago"):
        assert (await client.patch("/v1/tenant", json={"timezone": zone})).status_code == 200
        before = datetime.now(ZoneInfo(zone)).date()
        due = (await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()
        after = datetime.now(ZoneInfo(zone)).date()
        assert date.fromisoformat(due["service"]["next_due_date"]) in {before, after}, zone


async def test_an_order_runs_as_the_app_role_for_its_tenant(client, tenant, sessions, settings, monkeypatch):
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    real, seen = services.place_order, []

    async def watched(conn, *args, **kwargs):
        seen.append(tuple(await conn.fetchrow(
            "SELECT current_user, r.rolsuper, r.rolbypassrls, current_setting('hostq.tenant_id'), "
            "current_setting('hostq.scope') FROM pg_roles r WHERE r.rolname = current_user")))
        return await real(conn, *args, **kwargs)

    monkeypatch.setattr(services, "place_order", watched)
    for headers in ({}, key()):
        response = await client.post("/v1/services", json=order_body(customer_id, plan, region), headers=headers)
        assert response.status_code == 202, response.text
    assert seen == [("hostq_app", False, False, str(tenant["tenant_id"]), "tenant")] * 2


async def test_an_order_cannot_reach_another_tenants_rows(app, client, tenant, sessions, settings, resources):
    # Acting for one tenant, an order naming another tenant (its id, customer and plan) finds nothing: the
    # statement filters by tenant_id too, so only row-level security can hide the other tenant's customer.
    region, _ = await add_region(sessions, settings)
    other = await make_tenant(sessions, settings)
    async with signed_client(app, other) as theirs:
        their_customer, their_plan = await customer_and_plan(theirs)
    order = services.Order(customer_id=uuid.UUID(their_customer), plan=their_plan, domain="rls.example.com",
                           region=region, billing_cycle="monthly", provision="now")
    async with tenant_connection(resources.pg, tenant["tenant_id"]) as conn:
        with pytest.raises(ValidationFailed) as refused:
            await services.place_order(conn, other["tenant_id"], order, max_attempts=3, request_id=None)
    assert refused.value.errors == [{"field": "customer_id", "message": "no such customer"}]
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Service).where(
            Service.domain == "rls.example.com")) == 0


async def test_placement_in_sql_picks_what_the_placement_rule_picks(resources, tenant):
    rng = random.Random(7)
    async with tenant_connection(resources.pg, tenant["tenant_id"]) as conn:
        for n in range(200):
            servers = [placement_rules.ServerLoad(uuid.UUID(int=rng.getrandbits(128)), rng.choice([1, 3, 4, 6, 10]),
                                                  rng.randint(0, 10))
                       for _ in range(rng.randint(1, 6))]
            enabled = [rng.random() > 0.2 for _ in servers]
            if rng.random() < 0.5:  # a tie in load, between servers registered in either order
                servers.append(placement_rules.ServerLoad(uuid.UUID(int=rng.getrandbits(128)),
                                                          servers[0].capacity * 2, servers[0].used * 2))
                enabled.append(True)
            rows = sorted(zip(servers, enabled), key=lambda pair: str(pair[0].server_id))  # ties: the lowest id
            region = f"place-{n}"
            transaction = conn.transaction()
            await transaction.start()
            try:  # the servers with these counts, seen only by this transaction
                await conn.executemany(
                    "INSERT INTO whm_servers (id, created_at, name, region, url, username, token_encrypted, capacity,"
                    " enabled, used) VALUES ($1, now(), 'n', $2, 'http://127.0.0.1:9', 'root', '', $3, $4, $5)",
                    [(s.server_id, region, s.capacity, on, s.used) for s, on in rows])
                placed = await conn.fetchrow(PLACE.format(region="$1"), region)
            finally:
                await transaction.rollback()
            assert placed["servers"] == len(rows)
            assert placed["chosen"] == placement_rules.place(s for s, on in rows if on), rows
