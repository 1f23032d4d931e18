"""`/v1/tenant` and `GET /v1/jobs` with filters."""

from __future__ import annotations

from tests.integration.helpers import add_region, customer_and_plan, order_body


async def test_tenant_profile_read_and_patch(client):
    profile = (await client.get("/v1/tenant")).json()
    assert profile["timezone"] == "America/Sao_Paulo" and profile["rate_limit"] == 600
    patched = await client.patch("/v1/tenant", json={"sender": "Brand <billing@brand.example>", "lead_days": 7,
                                                     "allowed_origins": ["https://panel.brand.example"]})
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["sender"] == "Brand <billing@brand.example>" and body["lead_days"] == 7
    assert body["allowed_origins"] == ["https://panel.brand.example"] and body["name"] == profile["name"]
    bad = await client.patch("/v1/tenant", json={"timezone": "Mars/Olympus", "sender": "no brackets"})
    assert bad.status_code == 400
    assert {e["field"] for e in bad.json()["errors"]} == {"timezone", "sender"}
    assert (await client.get("/v1/tenant")).json()["timezone"] == "America/Sao_Paulo"  # nothing changed
    assert (await client.patch("/v1/tenant", json={"rate_limit": 10})).status_code == 400


async def test_job_list_filters(client, sessions, settings):
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    orders = [(await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()
              for _ in range(3)]
    listed = (await client.get("/v1/jobs?kind=provision.create&status=queued")).json()
    assert [j["id"] for j in listed["data"]] == [o["job"]["id"] for o in orders][::-1]
    one = (await client.get(f"/v1/jobs?resource_id={orders[1]['service']['id']}")).json()
    assert [j["id"] for j in one["data"]] == [orders[1]["job"]["id"]]
    assert (await client.get("/v1/jobs?status=succeeded")).json()["data"] == []
    for query, field in (("status=bogus", "status"), ("kind=provison.create", "kind"),
                         ("resource_id=notauuid", "resource_id"), ("resource_id=", "resource_id"),
                         ("status=", "status")):
        refused = await client.get(f"/v1/jobs?{query}")
        assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == field, refused.text
    page = (await client.get("/v1/jobs?limit=2")).json()
    assert len(page["data"]) == 2 and page["next_cursor"]
