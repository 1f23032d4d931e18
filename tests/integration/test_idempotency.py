"""Idempotency-Key on POST through the signed API, against real Postgres and Redis (api-v1.md, 'Idempotency')."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select, update

from api.auth import AUTH_KEY
from api.deps import ON_DB
from api.idempotency import IdempotencyMiddleware
from domain.db import session_scope
from domain.idempotency import rules, service as keys
from domain.idempotency.models import IdempotencyKey
from domain.jobs.models import Job
from domain.services.models import Service
from tests.conftest import make_tenant, signed_client
from tests.integration.helpers import add_region, customer_and_plan, order_body

CUSTOMER = {"name": "Ana", "email": "ana@example.com"}


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"k-{uuid.uuid4()}"}


async def _rows(sessions, tenant_id) -> list[IdempotencyKey]:
    async with sessions() as session:
        return list((await session.scalars(select(IdempotencyKey).where(IdempotencyKey.tenant_id == tenant_id)))
                    .all())


async def test_a_customer_post_is_replayed_not_repeated(client, tenant, sessions):
    headers = key()
    first = await client.post("/v1/customers", json=CUSTOMER, headers=headers)
    second = await client.post("/v1/customers", json=CUSTOMER, headers=headers)
    assert first.status_code == second.status_code == 201, second.text
    assert second.content == first.content and second.json()["id"] == first.json()["id"]
    assert second.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert second.headers["content-type"] == first.headers["content-type"]
    assert second.headers["x-request-id"] != first.headers["x-request-id"]  # each request keeps its own id
    listed = (await client.get("/v1/customers")).json()["data"]
    assert [c["id"] for c in listed] == [first.json()["id"]]
    [row] = await _rows(sessions, tenant["tenant_id"])
    assert row.state == "done" and row.response_status == 201 and row.completed_at is not None


async def test_an_order_is_replayed_with_its_job_and_location(client, tenant, sessions, settings, resources):
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    body, headers = order_body(customer_id, plan, region), key()
    first = await client.post("/v1/services", json=body, headers=headers)
    second = await client.post("/v1/services", json=body, headers=headers)
    assert first.status_code == second.status_code == 202, second.text
    assert second.content == first.content and second.headers["idempotent-replayed"] == "true"
    job_id = first.json()["job"]["id"]
    assert second.json()["job"]["id"] == job_id
    assert second.headers["location"] == first.headers["location"] == f"/v1/jobs/{job_id}"
    service_id = uuid.UUID(first.json()["service"]["id"])
    async with sessions() as session:
        jobs = await session.scalar(select(func.count()).select_from(Job).where(
            Job.tenant_id == tenant["tenant_id"], Job.resource_id == service_id))
        services = await session.scalar(select(func.count()).select_from(Service).where(
            Service.tenant_id == tenant["tenant_id"], Service.domain == body["domain"]))
    assert jobs == 1 and services == 1
    assert await resources.redis.llen(f"{settings.namespace}:dramatiq:provisioning.{region}") == 1


async def test_a_key_reused_for_another_request_is_422(client):
    headers = key()
    assert (await client.post("/v1/customers", json=CUSTOMER, headers=headers)).status_code == 201
    other_body = await client.post("/v1/customers", json={**CUSTOMER, "name": "Bia"}, headers=headers)
    other_path = await client.post("/v1/plans", json=CUSTOMER, headers=headers)
    other_query = await client.post("/v1/customers?x=1", json=CUSTOMER, headers=headers)
    for response in (other_body, other_path, other_query):
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["code"] == "idempotency_key_reused" and problem["status"] == 422
        assert problem["request_id"] == response.headers["x-request-id"]
    assert len((await client.get("/v1/customers")).json()["data"]) == 1


async def test_a_4xx_is_stored_and_replayed(client, tenant, sessions):
    headers = key()
    bad = {"name": "A", "email": "nope"}
    first = await client.post("/v1/customers", json=bad, headers=headers)
    second = await client.post("/v1/customers", json=bad, headers=headers)
    assert first.status_code == second.status_code == 400
    assert first.json()["code"] == "validation_error"
    assert second.content == first.content  # byte for byte, the first request_id included
    assert second.headers["content-type"] == first.headers["content-type"] == "application/problem+json"
    assert second.headers["idempotent-replayed"] == "true"
    [row] = await _rows(sessions, tenant["tenant_id"])
    assert row.response_status == 400


async def test_a_5xx_is_not_stored_and_the_retry_runs(client, tenant, sessions, monkeypatch):
    from domain.customers import service as customers
    real = customers.create_customer

    async def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(customers, "create_customer", boom)
    headers = key()
    failed = await client.post("/v1/customers", json=CUSTOMER, headers=headers)
    assert failed.status_code == 500 and failed.json()["code"] == "internal_error"
    assert await _rows(sessions, tenant["tenant_id"]) == []
    monkeypatch.setattr(customers, "create_customer", real)
    retried = await client.post("/v1/customers", json=CUSTOMER, headers=headers)
    assert retried.status_code == 201 and "idempotent-replayed" not in retried.headers
    replayed = await client.post("/v1/customers", json=CUSTOMER, headers=headers)
    assert replayed.status_code == 201 and replayed.json()["id"] == retried.json()["id"]


async def test_concurrent_requests_with_one_key_create_one_customer(client):
    headers = key()
    answers = await asyncio.gather(*[client.post("/v1/customers", json=CUSTOMER, headers=headers)
                                     for _ in range(20)])
    created = [a for a in answers if a.status_code == 201]
    in_flight = [a for a in answers if a.status_code == 409]
    assert len(created) + len(in_flight) == 20 and created
    assert len({a.json()["id"] for a in created}) == 1
    assert sum("idempotent-replayed" not in a.headers for a in created) == 1
    for answer in in_flight:
        assert answer.json()["code"] == "idempotency_in_flight" and answer.headers["retry-after"] == "1"
    assert len((await client.get("/v1/customers")).json()["data"]) == 1


async def test_concurrent_requests_with_one_key_whose_answer_is_a_4xx_run_once(client, sessions, settings):
    """The handler refuses the first request (an unknown region, found by its statement): the key stays claimed
    while its 4xx is stored, so the others get that answer replayed (or 409 in flight), never a run of their own
    (whose answer, had the state changed meanwhile, could differ from the one stored)."""
    await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    headers = key()
    body = order_body(customer_id, plan, "mars")
    answers = await asyncio.gather(*[client.post("/v1/services", json=body, headers=headers) for _ in range(10)])
    refused = [a for a in answers if a.status_code == 400]
    assert len(refused) + sum(a.status_code == 409 for a in answers) == 10 and refused, answers
    assert sum("idempotent-replayed" not in a.headers for a in refused) == 1, [a.headers for a in refused]
    assert len({a.json()["request_id"] for a in refused}) == 1  # all the one answer, byte for byte
    again = await client.post("/v1/services", json=body, headers=headers)
    assert again.headers["idempotent-replayed"] == "true" and again.content == refused[0].content


async def test_a_4xx_is_stored_even_when_the_effect_cannot_be_undone_alone(client, sessions, settings, tenant,
                                                                           monkeypatch):
    """If rolling back to the savepoint fails (say, the connection broke), everything is rolled back and the 4xx is
    stored under a fresh claim of the key: still replayed."""
    import api.deps

    async def cannot(conn, savepoint, after):
        return False

    monkeypatch.setattr(api.deps, "rollback_to", cannot)
    await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    headers, body = key(), order_body(customer_id, plan, "mars")
    first = await client.post("/v1/services", json=body, headers=headers)
    again = await client.post("/v1/services", json=body, headers=headers)
    assert first.status_code == again.status_code == 400 and "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true" and again.content == first.content


async def test_tenants_use_the_same_key_independently(app, client, sessions, settings):
    headers = key()
    mine = await client.post("/v1/customers", json=CUSTOMER, headers=headers)
    async with signed_client(app, await make_tenant(sessions, settings)) as other:
        theirs = await other.post("/v1/customers", json=CUSTOMER, headers=headers)
        reused = await other.post("/v1/customers", json={**CUSTOMER, "name": "Bia"}, headers=headers)
    assert mine.status_code == theirs.status_code == 201
    assert "idempotent-replayed" not in theirs.headers and theirs.json()["id"] != mine.json()["id"]
    assert reused.status_code == 422


async def test_key_validation(client, tenant, sessions):
    too_long = await client.post("/v1/customers", json=CUSTOMER, headers={"Idempotency-Key": "k" * 256})
    assert too_long.status_code == 400
    problem = too_long.json()
    assert problem["code"] == "validation_error" and problem["errors"][0]["field"] == "Idempotency-Key"
    empty = await client.post("/v1/customers", json=CUSTOMER, headers={"Idempotency-Key": ""})
    assert empty.status_code == 400
    twice = await client.post("/v1/customers", json=CUSTOMER, headers=[("Idempotency-Key", "a"),
                                                                          ("Idempotency-Key", "b")])
    assert twice.status_code == 400
    assert (await client.get("/v1/customers")).json()["data"] == []
    longest = await client.post("/v1/customers", json=CUSTOMER, headers={"Idempotency-Key": "~ " * 127 + "k"})
    assert longest.status_code == 201
    assert len(await _rows(sessions, tenant["tenant_id"])) == 1


async def _driver(session):
    """The session's asyncpg connection (domain.idempotency.service runs plain SQL on one)."""
    return (await (await session.connection()).get_raw_connection()).driver_connection


async def _stale_claim(sessions, tenant, name: str, body: bytes, *, committed: bool) -> uuid.UUID:
    """A claim left behind by a process that died, after committing its effect or before."""
    async with session_scope(sessions) as session:
        claim_id = await keys.claim(await _driver(session), tenant["tenant_id"], name,
                                    rules.fingerprint("POST", "/v1/customers", body), lock_timeout=timedelta(seconds=60))
        await session.execute(update(IdempotencyKey).where(IdempotencyKey.id == claim_id).values(
            locked_until=func.now() - timedelta(seconds=1), committed_at=func.now() if committed else None))
    return claim_id


async def test_a_stale_claim_whose_effect_committed_is_never_run_again(client, tenant, sessions):
    # A crash between the business commit and storing the response.
    body = json.dumps(CUSTOMER).encode()
    name = f"k-{uuid.uuid4()}"
    claim_id = await _stale_claim(sessions, tenant, name, body, committed=True)
    answer = await client.post("/v1/customers", content=body,
                               headers={"Idempotency-Key": name, "Content-Type": "application/json"})
    assert answer.status_code == 409 and answer.json()["code"] == "idempotency_in_flight"
    assert "retry-after" not in answer.headers
    assert (await client.get("/v1/customers")).json()["data"] == []
    [row] = await _rows(sessions, tenant["tenant_id"])
    assert row.id == claim_id and row.state == "in_flight"


async def test_a_stale_claim_that_never_committed_is_taken_over(client, tenant, sessions):
    # A crash before the business commit: nothing happened, so the retry runs.
    body = json.dumps(CUSTOMER).encode()
    name = f"k-{uuid.uuid4()}"
    await _stale_claim(sessions, tenant, name, body, committed=False)
    answer = await client.post("/v1/customers", content=body,
                               headers={"Idempotency-Key": name, "Content-Type": "application/json"})
    assert answer.status_code == 201, answer.text
    [row] = await _rows(sessions, tenant["tenant_id"])
    assert row.state == "done" and row.committed_at is not None
    replay = await client.post("/v1/customers", content=body,
                               headers={"Idempotency-Key": name, "Content-Type": "application/json"})
    assert replay.headers["idempotent-replayed"] == "true" and replay.json()["id"] == answer.json()["id"]
    assert len((await client.get("/v1/customers")).json()["data"]) == 1


def _scope(app, tenant_id, name: str) -> dict:
    return {"type": "http", "method": "POST", "path": "/v1/customers", "raw_path": b"/v1/customers",
            "query_string": b"", "headers": [(b"idempotency-key", name.encode())], "litestar_app": app,
            "app": app, "state": {}, AUTH_KEY: SimpleNamespace(tenant_id=tenant_id),
            "route_handler": SimpleNamespace(resolve_request_max_body_size=lambda: None)}


async def _receive():
    return {"type": "http.request", "body": b"{}", "more_body": False}


@pytest.fixture
def as_tenant(tenant):
    """The tenant the API's sessions act for, as SignatureAuthMiddleware would set it (when row-level security
    scopes the API's sessions by tenant)."""
    import domain.db
    current = getattr(domain.db, "CURRENT_TENANT", None)
    token = current.set(str(tenant["tenant_id"])) if current is not None else None
    yield
    if token is not None:
        current.reset(token)


async def test_an_exception_escaping_the_stack_releases_the_key(app, tenant, sessions, as_tenant):
    async def crash(scope, receive, send):
        await send({"type": "http.response.start", "status": 201, "headers": []})
        raise RuntimeError("unrendered")

    sent = []

    async def send(message):
        sent.append(message)

    with pytest.raises(RuntimeError):
        await IdempotencyMiddleware().handle(_scope(app, tenant["tenant_id"], "crash"), _receive, send, crash)
    assert sent == [] and await _rows(sessions, tenant["tenant_id"]) == []

    async def late(scope, receive, send):  # the answer is complete, then something fails (a background task)
        await send({"type": "http.response.start", "status": 201, "headers": [(b"content-type", b"x/y"),
                                                                              (b"set-cookie", b"a=b")]})
        await send({"type": "http.response.body", "body": b"done", "more_body": False})
        raise RuntimeError("after the answer")

    with pytest.raises(RuntimeError):
        await IdempotencyMiddleware().handle(_scope(app, tenant["tenant_id"], "late"), _receive, send, late)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    [row] = await _rows(sessions, tenant["tenant_id"])
    assert (row.state, row.response_status, row.response_body) == ("done", 201, b"done")
    assert row.response_headers == [["content-type", "x/y"]]


async def test_delete_expired_keeps_keys_24_hours(tenant, sessions):
    tenant_id = tenant["tenant_id"]
    ages = {"fresh": timedelta(0), "almost": timedelta(hours=23, minutes=59), "old": timedelta(hours=24, minutes=1),
            "ancient": timedelta(days=3)}
    async with session_scope(sessions) as session:
        for name, age in ages.items():
            claim_id = await keys.claim(await _driver(session), tenant_id, name, "0" * 64,
                                        lock_timeout=timedelta(seconds=60))
            await session.execute(update(IdempotencyKey).where(IdempotencyKey.id == claim_id)
                                  .values(created_at=func.now() - age))
    with pytest.raises(ValueError):
        async with session_scope(sessions) as session:
            await keys.delete_expired(await _driver(session), older_than=timedelta(hours=1))
    async with session_scope(sessions) as session:
        deleted = await keys.delete_expired(await _driver(session))
    assert deleted >= 2  # other tests' rows are young; only rows older than 24 h go
    assert sorted(r.key for r in await _rows(sessions, tenant_id)) == ["almost", "fresh"]
    async with session_scope(sessions) as session:
        assert await keys.delete_expired(await _driver(session), older_than=timedelta(days=2)) == 0


async def _take_over_claims(sessions, tenant_id) -> None:
    """What another request does to a claim whose lock ran out: its row is replaced by a new claim."""
    async with session_scope(sessions) as session:
        await session.execute(update(IdempotencyKey).where(IdempotencyKey.tenant_id == tenant_id,
                                                           IdempotencyKey.committed_at.is_(None))
                              .values(id=uuid.uuid4()))


async def test_a_claim_taken_over_mid_request_commits_nothing(client, tenant, sessions, monkeypatch):
    # The ORM handlers' protocol: the claim commits first, and the handler's transaction marks it.
    from domain.catalog import service as catalog
    real = catalog.create_plan

    async def slow_past_the_lock(*args, **kwargs):
        row = await real(*args, **kwargs)
        await _take_over_claims(sessions, tenant["tenant_id"])
        return row

    monkeypatch.setattr(catalog, "create_plan", slow_past_the_lock)
    body = {"code": "tk", "name": "Taken", "whm_package": "tk", "prices": {"monthly": 100}}
    answer = await client.post("/v1/plans", json=body, headers=key())
    assert answer.status_code == 409 and answer.json()["code"] == "conflict", answer.text
    monkeypatch.setattr(catalog, "create_plan", real)
    assert (await client.get("/v1/plans")).json()["data"] == []  # the effect rolled back with the lost claim


async def test_a_claim_in_the_requests_transaction_is_invisible_until_it_commits_with_the_answer(
        client, tenant, sessions, monkeypatch):
    # The `db` handlers' protocol (POST /v1/customers): claim, effect and answer commit together.
    from domain.customers import service as customers
    real = customers.create_customer
    headers, during = key(), {}

    async def meanwhile(*args, **kwargs):
        row = await real(*args, **kwargs)
        during["rows"] = await _rows(sessions, tenant["tenant_id"])  # another session: nothing yet
        during["retry"] = await client.post("/v1/customers", json=CUSTOMER, headers=headers)  # waits, then 409
        return row

    monkeypatch.setattr(customers, "create_customer", meanwhile)
    first = await client.post("/v1/customers", json=CUSTOMER, headers=headers)
    monkeypatch.setattr(customers, "create_customer", real)
    assert first.status_code == 201, first.text
    assert during["rows"] == []
    assert during["retry"].status_code == 409 and during["retry"].json()["code"] == "idempotency_in_flight"
    [row] = await _rows(sessions, tenant["tenant_id"])
    assert (row.state, row.response_status, row.committed_at is not None) == ("done", 201, True)
    replay = await client.post("/v1/customers", json=CUSTOMER, headers=headers)
    assert replay.headers["idempotent-replayed"] == "true" and replay.json()["id"] == first.json()["id"]
    assert len((await client.get("/v1/customers")).json()["data"]) == 1


async def test_an_exception_escaping_a_db_handler_commits_nothing(app, tenant, sessions):
    # In the request's transaction nothing is half-kept: whether or not the answer was complete, the claim
    # (and any effect) rolls back, so the client's retry with the same key runs afresh.
    async def late(scope, receive, send):
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"done", "more_body": False})
        raise RuntimeError("after the answer")

    sent = []

    async def send(message):
        sent.append(message)

    scope = _scope(app, tenant["tenant_id"], "db-late")
    scope["route_handler"] = SimpleNamespace(resolve_request_max_body_size=lambda: None, opt=dict(ON_DB))
    with pytest.raises(RuntimeError):
        await IdempotencyMiddleware().handle(scope, _receive, send, late)
    assert sent == [] and await _rows(sessions, tenant["tenant_id"]) == []


async def test_the_scheduler_expires_every_tenants_old_keys(sessions, settings):
    from domain.pg import LazyPool
    from schedules.clock import expire_keys_once
    tenants = [(await make_tenant(sessions, settings))["tenant_id"] for _ in range(2)]
    async with session_scope(sessions) as session:
        for tenant_id in tenants:
            for name, age in (("new", timedelta(hours=1)), ("old", timedelta(hours=25))):
                claim_id = await keys.claim(await _driver(session), tenant_id, name, "0" * 64,
                                            lock_timeout=timedelta(seconds=60))
                await session.execute(update(IdempotencyKey).where(IdempotencyKey.id == claim_id)
                                      .values(created_at=func.now() - age))
    pool = LazyPool(settings.database_url, max_size=1, scope="system")
    try:
        assert await expire_keys_once(pool) >= 2
    finally:
        await pool.close()
    for tenant_id in tenants:
        assert [r.key for r in await _rows(sessions, tenant_id)] == ["new"]


@pytest.mark.parametrize("on_db", [True, False])
async def test_a_client_that_does_not_read_its_answer_holds_no_database_connection(app, tenant, sessions, on_db):
    """The answer goes out once the request's connection is back in the pool: a client whose socket is full (it
    sends and never reads) must not keep one, or a handful of them would stall every tenant's requests."""
    async def created(scope, receive, send):
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"{}", "more_body": False})

    sending, never = asyncio.Event(), asyncio.Event()

    async def stuck(message):
        sending.set()
        await never.wait()  # the client reads nothing: the write never drains

    await (await app.state.resources.pg.get()).fetchval("SELECT 1")  # the pool is open
    scope = _scope(app, tenant["tenant_id"], f"stuck-{uuid.uuid4()}")
    if on_db:
        scope["route_handler"] = SimpleNamespace(resolve_request_max_body_size=lambda: None, opt=dict(ON_DB))
    answering = asyncio.create_task(IdempotencyMiddleware().handle(scope, _receive, stuck, created))
    try:
        await asyncio.wait_for(sending.wait(), 5)
        pool = await app.state.resources.pg.get()
        assert pool.get_idle_size() == pool.get_size(), "a connection is held while the answer is being sent"
    finally:
        answering.cancel()
    [row] = [r for r in await _rows(sessions, tenant["tenant_id"]) if r.key == scope["headers"][0][1].decode()]
    assert row.response_status == 201  # stored before it was sent
