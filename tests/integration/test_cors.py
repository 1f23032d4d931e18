"""CORS per tenant: nothing allowed by default; a tenant's origins see its responses, no one else's."""

from __future__ import annotations


async def test_no_origin_is_allowed_by_default(client, anon):
    preflight = await anon.options("/v1/customers", headers={"Origin": "https://evil.example",
                                                             "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 204 and "access-control-allow-origin" not in preflight.headers
    response = await client.get("/v1/customers", headers={"Origin": "https://evil.example"})
    assert response.status_code == 200 and "access-control-allow-origin" not in response.headers


async def test_a_tenants_origin_gets_cors_headers_for_that_tenant_only(app, client, sessions, settings, anon):
    from tests.conftest import make_tenant, signed_client
    origin = "https://panel.brand.example"
    assert (await client.patch("/v1/tenant", json={"allowed_origins": [origin]})).status_code == 200
    preflight = await anon.options("/v1/customers", headers={"Origin": origin,
                                                             "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == origin
    assert "x-signature" in preflight.headers["access-control-allow-headers"]
    mine = await client.get("/v1/customers", headers={"Origin": origin})
    assert mine.headers["access-control-allow-origin"] == origin
    assert "x-ratelimit-remaining" in mine.headers["access-control-expose-headers"]
    async with signed_client(app, await make_tenant(sessions, settings)) as other:
        theirs = await other.get("/v1/customers", headers={"Origin": origin})
    assert theirs.status_code == 200 and "access-control-allow-origin" not in theirs.headers
