"""Customers, plans, orders and jobs through the signed API, against real Postgres and Redis."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select, update

from domain.db import session_scope
from domain.jobs.models import Job
from domain.provisioning.models import WhmServer
from domain.services.models import Service
from tests.integration.helpers import add_region, customer_and_plan, order_body


async def test_order_now_answers_202_with_job_location_and_queues_it(client, sessions, settings, resources):
    region, server_id = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    response = await client.post("/v1/services", json=order_body(customer_id, plan, region),
                                 headers={"X-Request-Id": "order-1"})
    assert response.status_code == 202, response.text
    body = response.json()
    job, service = body["job"], body["service"]
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["kind"] == "provision.create" and job["status"] == "queued"
    assert job["max_attempts"] == settings.job_max_attempts and job["request_id"] == "order-1"
    assert job["resource"] == {"type": "service", "id": service["id"]}
    assert service["status"] == "provisioning" and service["server_id"] == str(server_id)
    assert service["last_job_id"] == job["id"] and service["region"] == region

    polled = await client.get(f"/v1/jobs/{job['id']}")
    alias = await client.get(f"/v1/provision/{job['id']}/status")
    assert polled.status_code == alias.status_code == 200
    assert polled.json()["id"] == alias.json()["id"] == job["id"]
    assert (await client.get(f"/v1/services/{service['id']}")).json()["domain"] == service["domain"]

    # The message reached the broker's queue for that region, carrying only the job id.
    queue = f"{settings.namespace}:dramatiq:provisioning.{region}"
    assert await resources.redis.llen(queue) == 1
    async with sessions() as session:
        row = await session.scalar(select(Job).where(Job.id == uuid.UUID(job["id"])))
    assert row.queue == f"provisioning.{region}"


async def test_order_validation(client, sessions, settings):
    region, _ = await add_region(sessions, settings, capacity=1)
    customer_id, plan = await customer_and_plan(client)
    cases = {
        "region": order_body(customer_id, plan, "nowhere"),
        "domain": order_body(customer_id, plan, region, domain="not a domain"),
        "plan": order_body(customer_id, "no-such-plan", region),
        "customer_id": order_body(str(uuid.uuid4()), plan, region),
        "billing_cycle": order_body(customer_id, plan, region, billing_cycle="quarterly"),
        "username": order_body(customer_id, plan, region, username="test1"),
        "provision": order_body(customer_id, plan, region, provision="on_payment"),
    }
    for field, body in cases.items():
        response = await client.post("/v1/services", json=body)
        assert response.status_code == 400, (field, response.text)
        problem = response.json()
        assert problem["code"] == "validation_error"
        assert problem["errors"][0]["field"] == field, problem
    for reserved in ("mysql", "root", "mypassword"):  # names WHM keeps for itself: refused before anything is stored
        response = await client.post("/v1/services", json=order_body(customer_id, plan, region, username=reserved))
        assert response.status_code == 400 and response.json()["errors"][0]["field"] == "username", response.text

    assert (await client.post("/v1/services", json=order_body(customer_id, plan, region))).status_code == 202
    full = await client.post("/v1/services", json=order_body(customer_id, plan, region))
    assert full.status_code == 422 and full.json()["code"] == "no_capacity"


async def test_a_live_domain_or_username_cannot_be_ordered_twice(client, sessions, settings):
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    body = order_body(customer_id, plan, region, username="anabela1")
    assert (await client.post("/v1/services", json=body)).status_code == 202

    def clash(response) -> tuple[str, str]:
        assert response.status_code == 409 and response.json()["code"] == "conflict", response.text
        [error] = response.json()["errors"]
        return error["field"], error["message"]

    # The domain clashes (whatever the username): the 409 names the domain, not the free username.
    again = await client.post("/v1/services", json={**body, "domain": body["domain"].upper(), "username": "zelia"})
    assert clash(again) == ("domain", f"{body['domain']!r} is already in use")
    # Another domain, a username whose first 8 characters WHM would see as the same account's.
    same8 = await client.post("/v1/services", json=order_body(customer_id, plan, region, username="anabela1x"))
    field, message = clash(same8)
    assert field == "username" and "'anabela1x' is in use on the server" in message
    assert "None" not in again.json()["detail"] + same8.json()["detail"]


async def test_an_action_the_state_refuses_is_422_in_plain_english(client, sessions, settings):
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    order = (await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()
    service_id = order["service"]["id"]

    async def refused(path: str, status: str, **body) -> str:
        async with session_scope(sessions) as session:  # as the worker leaves them: the job done, the service moved
            await session.execute(update(Job).where(Job.id == uuid.UUID(order["job"]["id"])).values(status="succeeded"))
            await session.execute(update(Service).where(Service.id == uuid.UUID(service_id)).values(status=status))
        response = await client.post(path, json=body or None)
        assert response.status_code == 422 and response.json()["code"] == "invalid_state", response.text
        return response.json()["detail"]

    assert await refused(f"/v1/provision/{service_id}", "active") == "cannot provision an active service"
    assert await refused(f"/v1/services/{service_id}/unsuspend", "active") == "cannot unsuspend an active service"
    assert await refused(f"/v1/services/{service_id}/change-plan", "terminated", plan=plan) == (
        "cannot change the plan of a terminated service")


async def test_orders_are_placed_on_the_least_loaded_server(client, sessions, settings):
    region, first = await add_region(sessions, settings, capacity=10)
    _, second = await add_region(sessions, settings, region, capacity=10)
    customer_id, plan = await customer_and_plan(client)
    placed = []
    for _ in range(4):
        response = await client.post("/v1/services", json=order_body(customer_id, plan, region))
        placed.append(response.json()["service"]["server_id"])
    assert sorted(placed) == sorted([str(first), str(second)] * 2)


async def test_customer_pagination_and_filters(client):
    ids = []
    for n in range(5):
        response = await client.post("/v1/customers", json={"name": f"C{n}", "email": f"c{n}@example.com",
                                                            "external_id": f"ext-{n}"})
        ids.append(response.json()["id"])
    first = (await client.get("/v1/customers?limit=2")).json()
    assert [c["id"] for c in first["data"]] == ids[::-1][:2]
    second = (await client.get(f"/v1/customers?limit=2&cursor={first['next_cursor']}")).json()
    assert [c["id"] for c in second["data"]] == ids[::-1][2:4]
    last = (await client.get(f"/v1/customers?limit=2&cursor={second['next_cursor']}")).json()
    assert [c["id"] for c in last["data"]] == ids[:1] and last["next_cursor"] is None
    assert (await client.get("/v1/customers?limit=201")).status_code == 400
    assert (await client.get("/v1/customers?cursor=%%%")).status_code == 400
    found = (await client.get("/v1/customers?external_id=ext-3")).json()["data"]
    assert [c["id"] for c in found] == [ids[3]]


async def test_customer_rules_and_conflicts(client):
    bad = await client.post("/v1/customers", json={"name": "A", "email": "nope", "document": "12345678900",
                                                  "channels": ["fax"]})
    assert bad.status_code == 400
    assert {e["field"] for e in bad.json()["errors"]} == {"email", "document", "channels"}
    ok = await client.post("/v1/customers", json={"name": "A", "email": "a@example.com", "document": "52998224725",
                                                 "phone": "+5511987654321", "channels": ["email", "whatsapp"],
                                                 "external_id": "dup"})
    assert ok.status_code == 201, ok.text
    dup = await client.post("/v1/customers", json={"name": "B", "email": "b@example.com", "external_id": "dup"})
    assert dup.status_code == 409 and dup.json()["code"] == "conflict"
    assert [e["field"] for e in dup.json()["errors"]] == ["external_id"], dup.json()
    unknown_field = await client.post("/v1/customers", json={"name": "A", "email": "a@example.com", "x": 1})
    assert unknown_field.status_code == 400


async def test_plans(client):
    body = {"code": "pro", "name": "Pro", "whm_package": "pro", "prices": {"monthly": 9990}}
    created = await client.post("/v1/plans", json=body)
    assert created.status_code == 201 and created.json()["currency"] == "BRL"
    again = await client.post("/v1/plans", json=body)
    assert again.status_code == 409 and [e["field"] for e in again.json()["errors"]] == ["code"], again.json()
    bad = await client.post("/v1/plans", json={**body, "code": "x", "prices": {"weekly": 1}})
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "prices"
    for price in (-1, 100_000_000, 10**20, 10**400):  # above 99,999,999 cents no client reads it exactly
        huge = await client.post("/v1/plans", json={**body, "code": "x", "prices": {"monthly": price}})
        assert huge.status_code == 400 and huge.json()["errors"] == [
            {"field": "prices", "message": "prices are integer cents from 0 to 99999999"}], huge.text
    most = await client.post("/v1/plans", json={**body, "code": "y", "prices": {"monthly": 99_999_999}})
    assert most.status_code == 201, most.text
    usd = await client.post("/v1/plans", json={**body, "code": "usd", "currency": "USD"})
    assert usd.status_code == 201 and usd.json()["currency"] == "USD", usd.text
    for currency in ("XYZ", "brl", "BR"):  # shaped like a code but not one of ISO 4217's, or not shaped like one
        odd = await client.post("/v1/plans", json={**body, "code": "odd", "currency": currency})
        assert odd.status_code == 400 and [e["field"] for e in odd.json()["errors"]] == ["currency"], odd.text
    assert odd.json()["errors"][0]["message"] == "Expected `str` matching regex '^[A-Z]{3}$'"  # the schema's rule
    for currency in ("XYZ", "XAU", "XTS", "XXX"):  # not in ISO 4217; gold, testing and "no currency" are not money
        unknown = await client.post("/v1/plans", json={**body, "code": "odd", "currency": currency})
        assert unknown.json()["errors"] == [{"field": "currency", "message": "an ISO 4217 code such as BRL"}], (
            currency, unknown.text)
    listed = (await client.get("/v1/plans")).json()["data"]
    assert [p["code"] for p in listed] == ["usd", "y", "pro"]


async def test_jobs_of_another_tenant_are_404(app, client, sessions, settings):
    from tests.conftest import make_tenant, signed_client
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    job_id = (await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()["job"]["id"]
    async with signed_client(app, await make_tenant(sessions, settings)) as other:
        assert (await other.get(f"/v1/jobs/{job_id}")).status_code == 404
        assert (await other.get("/v1/jobs/not-an-id")).status_code == 404


async def test_nul_characters_are_bad_input_named_in_errors_not_server_errors(client):
    for response, fields in (
            (await client.get("/v1/customers?external_id=%00"), ["external_id"]),
            (await client.post("/v1/customers", json={"name": "A\x00", "email": "a@example.com"}), ["name"]),
            (await client.post("/v1/customers", json={"name": "A", "email": "a@example.com",
                                                      "external_id": "x\x00"}), ["external_id"])):
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["code"] == "validation_error" and "NUL" in body["detail"]
        assert [e["field"] for e in body["errors"]] == fields, body
    unknown_kind = (await client.get("/v1/jobs?kind=%00")).json()
    assert unknown_kind["code"] == "validation_error" and unknown_kind["errors"][0]["field"] == "kind"


async def test_a_customer_filter_that_is_not_an_id_matches_nothing(client, sessions, settings):
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    await client.post("/v1/services", json=order_body(customer_id, plan, region))
    for typo in ("abc", ""):  # a typo, or an unset variable, is not "this customer has none" nor "all of them"
        refused = await client.get(f"/v1/services?customer_id={typo}")
        assert refused.status_code == 400 and refused.json()["errors"] == [
            {"field": "customer_id", "message": "not an id (a UUID)"}], refused.text
    assert len((await client.get(f"/v1/services?customer_id={customer_id}")).json()["data"]) == 1


async def test_a_body_field_missing_or_of_the_wrong_type_is_named_in_errors(client):
    missing = await client.post("/v1/customers", json={"name": "Ana"})
    wrong = await client.post("/v1/customers", json={"name": 5, "email": "ana@example.com"})
    unknown = await client.post("/v1/customers", json={"name": "Ana", "email": "ana@example.com", "nick": "a"})
    plan = await client.post("/v1/plans", json={"code": "basic", "name": "Basic", "whm_package": "basic",
                                                "prices": {"monthly": "cheap"}})
    not_json = await client.post("/v1/customers", content=b"[1, 2]", headers={"Content-Type": "application/json"})
    for response in (missing, wrong, unknown, plan, not_json):
        assert response.status_code == 400 and response.json()["code"] == "validation_error", response.text
    assert missing.json()["type"] == "https://hostq.dev/problems/validation"  # api-v1.md's example
    assert [e["field"] for e in missing.json()["errors"]] == ["email"], missing.json()
    assert [e["field"] for e in wrong.json()["errors"]] == ["name"], wrong.json()
    assert [e["field"] for e in unknown.json()["errors"]] == ["nick"], unknown.json()
    assert [e["field"] for e in plan.json()["errors"]] == ["prices"], plan.json()
    assert [e["field"] for e in not_json.json()["errors"]] == ["body"], not_json.json()
    # Several mistakes at once are all named, each field once (msgspec itself stops at the first).
    empty_object = await client.post("/v1/customers", json={})
    assert [e["field"] for e in empty_object.json()["errors"]] == ["name", "email"], empty_object.json()
    several = await client.post("/v1/services", json={"plan": 3, "domain": "a", "region": "us",
                                                      "billing_cycle": "weekly", "colour": "red"})
    assert several.status_code == 400 and [e["field"] for e in several.json()["errors"]] == [
        "customer_id", "plan", "domain", "billing_cycle", "colour"], several.json()
    # ...but no more than 20, each text cut short: a body of many unknown fields (or a huge name) must not make an
    # answer larger than the request, nor a stored idempotent answer of megabytes.
    flood = {"name": "A", "email": "a@example.com", **{f"f{n:06d}": 0 for n in range(50_000)}, "x" * 5000: 1}
    flooded = await client.post("/v1/customers", json=flood, headers={"Idempotency-Key": f"flood-{uuid.uuid4()}"})
    assert flooded.status_code == 400 and len(flooded.json()["errors"]) == 20, flooded.json()
    assert "only the first 20 problems are named" in flooded.json()["detail"] and len(flooded.content) < 10_000
    huge_name = await client.post("/v1/customers", json={"name": "A", "email": "a@example.com", "y" * 5000: 1})
    assert all(len(e["message"]) <= 300 for e in huge_name.json()["errors"]) and len(huge_name.content) < 2_000
    for path in ("/v1/customers", f"/v1/services/{uuid.uuid4()}/change-plan"):  # no body at all
        empty = await client.post(path)
        assert empty.status_code == 400 and empty.json()["errors"] == [
            {"field": "body", "message": "a JSON object is required"}], empty.text


async def _fail_provisioning(sessions, order: dict) -> None:
    """As the worker leaves them when a create gives up: the job failed, the service failed (off its server's count)."""
    async with session_scope(sessions) as session:
        await session.execute(update(Job).where(Job.id == uuid.UUID(order["job"]["id"])).values(
            status="failed", attempts=3, error_code="whm_rejected", error_message="no"))
        await session.execute(update(Service).where(Service.id == uuid.UUID(order["service"]["id"]))
                              .values(status="failed"))


async def test_provisioning_a_failed_service_again_on_a_server_filled_since_is_no_capacity(client, sessions,
                                                                                          settings):
    """The failed service left its server's count; another order took the room. Provisioning it again would put
    3 services on a server for 2: refused, nothing changes, until the server has room."""
    region, server_id = await add_region(sessions, settings, capacity=2)
    customer_id, plan = await customer_and_plan(client)
    first = (await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()
    failed = (await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()
    await _fail_provisioning(sessions, failed)
    assert (await client.post("/v1/services", json=order_body(customer_id, plan, region))).status_code == 202

    again = await client.post(f"/v1/provision/{failed['service']['id']}")
    assert again.status_code == 422 and again.json()["code"] == "no_capacity", again.text
    assert "its server has no room for it now" in again.json()["detail"]
    assert "2 of 2" not in again.json()["detail"]  # the shared server's name and count are ops' business
    service = (await client.get(f"/v1/services/{failed['service']['id']}")).json()
    assert service["status"] == "failed" and service["last_job_id"] == failed["job"]["id"]
    async with sessions() as session:
        assert (await session.get(WhmServer, server_id)).used == 2

    await _fail_provisioning(sessions, first)  # room again (its account never came)
    again = await client.post(f"/v1/provision/{failed['service']['id']}")
    assert again.status_code == 202, again.text
    assert again.json()["service"]["status"] == "provisioning"
    async with sessions() as session:
        assert (await session.get(WhmServer, server_id)).used == 2


async def test_the_databases_capacity_backstop_answers_no_capacity_and_changes_nothing(client, sessions, settings,
                                                                                        monkeypatch, caplog):
    """Were the room check ever skipped (here: switched off), the counter's trigger (migration 0011) refuses."""
    region, server_id = await add_region(sessions, settings, capacity=1)
    customer_id, plan = await customer_and_plan(client)
    failed = (await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()
    await _fail_provisioning(sessions, failed)
    assert (await client.post("/v1/services", json=order_body(customer_id, plan, region))).status_code == 202

    async def forgot(session, server_id):
        return None

    monkeypatch.setattr("domain.services.lifecycle.no_room_again", forgot)
    again = await client.post(f"/v1/provision/{failed['service']['id']}")
    assert again.status_code == 422 and again.json()["code"] == "no_capacity", again.text
    assert "capacity backstop refused" in caplog.text
    service = (await client.get(f"/v1/services/{failed['service']['id']}")).json()
    assert service["status"] == "failed" and service["last_job_id"] == failed["job"]["id"]
    async with sessions() as session:
        assert (await session.get(WhmServer, server_id)).used == 1
        assert await session.scalar(select(func.count()).select_from(Job).where(
            Job.resource_id == uuid.UUID(failed["service"]["id"]))) == 1


async def test_asking_for_another_plan_while_a_plan_change_is_in_flight_is_a_conflict(client, sessions, settings):
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    other, third = [(await client.post("/v1/plans", json={
        "code": code, "name": code, "whm_package": "pro", "prices": {"monthly": 9990}})).json()["code"]
        for code in (f"o{uuid.uuid4().hex[:6]}", f"t{uuid.uuid4().hex[:6]}")]
    order = (await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()
    async with session_scope(sessions) as session:
        await session.execute(update(Job).where(Job.id == uuid.UUID(order["job"]["id"])).values(status="succeeded"))
        await session.execute(update(Service).where(Service.id == uuid.UUID(order["service"]["id"]))
                              .values(status="active"))
    path = f"/v1/services/{order['service']['id']}/change-plan"
    first = await client.post(path, json={"plan": other})
    assert first.status_code == 202
    assert (await client.post(path, json={"plan": other})).json()["job"]["id"] == first.json()["job"]["id"]
    conflict = await client.post(path, json={"plan": third})
    assert conflict.status_code == 409 and conflict.json()["code"] == "conflict", conflict.text
    assert first.json()["job"]["id"] in conflict.json()["detail"]
    suspend = await client.post(f"/v1/services/{order['service']['id']}/suspend", json={})
    assert suspend.status_code == 409, suspend.text

    # Bad input is a 400 whatever is in flight, another kind of job too.
    async with session_scope(sessions) as session:
        await session.execute(update(Job).where(Job.id == uuid.UUID(first.json()["job"]["id"]))
                              .values(status="succeeded"))
    assert (await client.post(f"/v1/services/{order['service']['id']}/suspend", json={})).status_code == 202
    unknown = await client.post(path, json={"plan": "no-such-plan"})
    assert unknown.status_code == 400 and unknown.json()["errors"] == [{"field": "plan", "message": "no such plan"}]
    annual = (await client.post("/v1/plans", json={"code": f"a{uuid.uuid4().hex[:6]}", "name": "A",
                                                   "whm_package": "pro", "prices": {"annual": 50000}})).json()
    unsold = await client.post(path, json={"plan": annual["code"]})  # the service is monthly
    assert unsold.status_code == 400 and unsold.json()["errors"] == [
        {"field": "plan", "message": f"plan {annual['code']!r} is not sold monthly, the service's billing cycle"}]
    dollars = (await client.post("/v1/plans", json={"code": f"d{uuid.uuid4().hex[:6]}", "name": "D", "currency": "USD",
                                                    "whm_package": "pro", "prices": {"monthly": 500}})).json()
    other_currency = await client.post(path, json={"plan": dollars["code"]})  # the service is billed in BRL
    assert other_currency.status_code == 400 and other_currency.json()["errors"] == [
        {"field": "plan", "message": f"plan {dollars['code']!r} is priced in USD; the service is billed in BRL, its "
                                     "plan's currency"}], other_currency.text
    assert (await client.post(path, json={"plan": third})).status_code == 409


async def test_an_action_without_fields_refuses_a_body_with_some(client, sessions, settings):
    """Bodies are strict everywhere: terminate, unsuspend and provision take none (or `{}`); anything else is 400
    and records no job."""
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    order = (await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()
    service_id = order["service"]["id"]
    for path in (f"/v1/services/{service_id}/terminate", f"/v1/services/{service_id}/unsuspend",
                 f"/v1/provision/{service_id}"):
        unknown = await client.post(path, json={"force": True})
        assert unknown.status_code == 400 and [e["field"] for e in unknown.json()["errors"]] == ["force"], path
        assert (await client.post(path, json=[1])).status_code == 400, path
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Job).where(
            Job.resource_id == uuid.UUID(service_id))) == 1  # only the order's create
    same = await client.post(f"/v1/provision/{service_id}", json={})  # `{}` is no fields: the create in flight
    assert same.status_code == 202 and same.json()["job"]["id"] == order["job"]["id"], same.text


async def test_a_value_of_another_json_type_is_refused_not_converted(client):
    """Bodies are strict JSON: a number sent as a string (or as a float) is a 400 naming the field, and creates
    nothing, rather than being read as the number it spells."""
    body = {"code": "strict", "name": "Strict", "whm_package": "basic"}
    for price in ("100", "1e3", 100.0, True):
        refused = await client.post("/v1/plans", json={**body, "prices": {"monthly": price}})
        assert refused.status_code == 400 and refused.json()["code"] == "validation_error", (price, refused.text)
        assert [e["field"] for e in refused.json()["errors"]] == ["prices"], refused.json()
    assert (await client.get("/v1/plans")).json()["data"] == []
    before = (await client.get("/v1/tenant")).json()
    refused = await client.patch("/v1/tenant", json={"lead_days": "5"})
    assert refused.status_code == 400 and refused.json()["errors"] == [
        {"field": "lead_days", "message": "Expected `int`, got `str`"}], refused.text
    assert (await client.get("/v1/tenant")).json() == before
    created = await client.post("/v1/plans", json={**body, "prices": {"monthly": 100}})
    assert created.status_code == 201 and created.json()["prices"] == {"monthly": 100}, created.text


async def test_a_query_parameter_a_list_does_not_take_or_given_twice_is_refused(client, sessions, settings):
    """A typo of a filter must not answer with every row (Stripe: "Received unknown parameter"), nor a filter given
    twice with the rows of one of its values."""
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    assert (await client.post("/v1/services", json=order_body(customer_id, plan, region))).status_code == 202
    typo = await client.get(f"/v1/services?customer={uuid.uuid4()}")
    assert typo.status_code == 400 and typo.json()["errors"] == [
        {"field": "customer", "message": "not a parameter of this request"}], typo.text
    twice = await client.get("/v1/jobs?status=queued&status=failed")
    assert twice.status_code == 400 and twice.json()["errors"] == [
        {"field": "status", "message": "given more than once"}], twice.text
    job_id = (await client.get("/v1/jobs")).json()["data"][0]["id"]
    for path in (f"/v1/jobs/{job_id}?expand=resource", f"/v1/jobs/{job_id}?job_id={job_id}"):
        refused = await client.get(path)
        assert refused.status_code == 400 and refused.json()["code"] == "validation_error", (path, refused.text)
    assert (await client.get("/v1/nothing?x=1")).status_code == 404  # an unknown route stays a 404
    assert (await client.post(f"/v1/jobs/{job_id}?x=1")).status_code == 405
    # what each route takes still works
    listed = await client.get(f"/v1/services?customer_id={customer_id}&status=provisioning&limit=1")
    assert listed.status_code == 200 and len(listed.json()["data"]) == 1, listed.text
    assert (await client.get("/v1/jobs?status=queued&kind=provision.create&limit=5")).status_code == 200
    assert (await client.get("/v1/customers?limit=5")).status_code == 200
