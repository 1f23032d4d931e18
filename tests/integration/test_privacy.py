"""LGPD: export everything held on a customer; erase personal fields, refused while services are live."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from sqlalchemy import text, update

from domain.db import session_scope
from domain.jobs.models import Job
from domain.services.models import Service
from hostq import jobs_cli
from tests.integration.helpers import add_region, customer_and_plan, order_body


async def test_export_holds_customer_services_and_jobs(client, sessions, settings):
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    order = (await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()
    export = await client.get(f"/v1/customers/{customer_id}/export")
    assert export.status_code == 200
    body = export.json()
    assert body["customer"]["id"] == customer_id and body["customer"]["email"] == "ana@example.com"
    assert [s["id"] for s in body["services"]] == [order["service"]["id"]]
    assert [j["id"] for j in body["jobs"]] == [order["job"]["id"]]


async def test_erase_is_refused_while_services_live_then_blanks_personal_fields(client, sessions, settings):
    region, _ = await add_region(sessions, settings)
    created = await client.post("/v1/customers", json={"name": "Caio", "email": "caio@example.com",
                                                      "phone": "+5511987654321", "document": "52998224725",
                                                      "external_id": "crm-77"})
    customer_id = created.json()["id"]
    _, plan = await customer_and_plan(client)
    order = (await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()
    refused = await client.delete(f"/v1/customers/{customer_id}")
    assert refused.status_code == 422 and refused.json()["code"] == "invalid_state"
    assert (await client.get(f"/v1/customers/{customer_id}")).json()["email"] == "caio@example.com"

    async with session_scope(sessions) as session:
        await session.execute(update(Service).where(Service.id == order["service"]["id"]).values(status="terminated"))
    assert (await client.delete(f"/v1/customers/{customer_id}")).status_code == 204
    erased = (await client.get(f"/v1/customers/{customer_id}")).json()
    assert erased["name"] == "[erased]" and "caio" not in erased["email"]
    assert erased["phone"] is None and erased["document"] is None and erased["external_id"] is None
    assert erased["erased_at"] is not None
    # The service (the fiscal trail) is still there.
    assert (await client.get(f"/v1/services/{order['service']['id']}")).status_code == 200
    assert (await client.delete(f"/v1/customers/{customer_id}")).status_code == 204  # erasing twice is harmless
    assert (await client.delete("/v1/customers/00000000-0000-0000-0000-000000000000")).status_code == 404


async def test_erase_waits_for_a_failed_service_that_may_have_its_account(client, sessions, settings):
    """Its create failed after a createacct that may have made the account (with the customer's email in it):
    not erased until a terminate has looked."""
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    order = (await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()
    async with session_scope(sessions) as session:
        await session.execute(update(Service).where(Service.id == order["service"]["id"]).values(
            status="failed", username="ana1", create_attempted_at=datetime.now(timezone.utc)))
    refused = await client.delete(f"/v1/customers/{customer_id}")
    assert refused.status_code == 422 and "may have a WHM account" in refused.json()["detail"], refused.text
    assert (await client.get(f"/v1/customers/{customer_id}")).json()["email"] == "ana@example.com"
    async with session_scope(sessions) as session:  # what a terminate ends with
        await session.execute(update(Service).where(Service.id == order["service"]["id"]).values(status="terminated"))
    assert (await client.delete(f"/v1/customers/{customer_id}")).status_code == 204


async def test_an_erased_customer_gets_no_service_again(client, sessions, settings):
    """Erasure waited for the customer's services to end: no order, provision or ops retry brings one back."""
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    order = (await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()
    async with session_scope(sessions) as session:  # its create gave up: a failed service is not live
        await session.execute(update(Service).where(Service.id == order["service"]["id"]).values(status="failed"))
        await session.execute(update(Job).where(Job.id == order["job"]["id"]).values(
            status="failed", error_code="whm_unavailable", finished_at=datetime.now(timezone.utc)))
    assert (await client.delete(f"/v1/customers/{customer_id}")).status_code == 204

    ordered = await client.post("/v1/services", json=order_body(customer_id, plan, region))
    assert ordered.status_code == 422 and ordered.json()["code"] == "invalid_state", ordered.text
    assert [e["field"] for e in ordered.json()["errors"]] == ["customer_id"]
    again = await client.post(f"/v1/provision/{order['service']['id']}")
    assert again.status_code == 422 and "erased" in again.json()["detail"], again.text
    retried = await jobs_cli.retry(settings, ids=[order["job"]["id"]])
    assert retried["retried"] == [] and "erased" in retried["skipped"][0]["reason"], retried
    assert (await client.get(f"/v1/services/{order['service']['id']}")).json()["status"] == "failed"
    listed = (await client.get(f"/v1/services?customer_id={customer_id}")).json()["data"]
    assert [s["id"] for s in listed] == [order["service"]["id"]]  # nothing new was recorded


async def test_an_erasure_waits_for_an_order_in_flight_and_then_sees_its_service(client, sessions, settings):
    """The order holds the customer's row (FOR KEY SHARE) until it commits; the erasure (FOR UPDATE) waits, then
    finds the new live service and is refused."""
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    engine = sessions.kw["bind"]
    async with engine.connect() as order_tx:
        await order_tx.execute(text("SELECT id FROM customers WHERE id = :id FOR KEY SHARE"), {"id": customer_id})
        erasing = asyncio.create_task(client.delete(f"/v1/customers/{customer_id}"))
        await asyncio.sleep(0.3)
        assert not erasing.done()  # waiting for the order's lock
        await order_tx.rollback()
    assert (await erasing).status_code == 204  # the order was rolled back: nothing live, erased
