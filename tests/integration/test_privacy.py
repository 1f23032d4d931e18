"""LGPD: export everything held on a customer; erase personal fields, refused while services are live."""

from __future__ import annotations

from sqlalchemy import update

from domain.db import session_scope
from domain.services.models import Service
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
