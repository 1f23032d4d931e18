"""CORS per tenant: nothing allowed by default; a tenant's origins see its responses, no one else's."""

from __future__ import annotations

import asyncio


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


async def test_preflights_from_ever_new_origins_keep_a_bounded_memory(app, anon, monkeypatch):
    """A preflight needs no credentials: a flood of made-up origins must not grow a process without end."""
    from api import cors
    monkeypatch.setattr(cors, "MAX_ORIGINS", 50)
    middleware = cors.TenantCorsMiddleware()
    await anon.get("/health/live")  # the app has started: its resources are open
    scope = {"type": "http", "app": app, "litestar_app": app, "headers": []}
    for n in range(120):
        assert not await middleware._allowed(scope, f"https://flood{n}.example")
    assert len(middleware._known) <= 50 and "https://flood119.example" in middleware._known


async def test_an_origin_listed_just_after_a_refused_preflight_passes_within_seconds(client, anon, monkeypatch):
    from api import cors
    monkeypatch.setattr(cors, "REFUSED_CACHE_S", 0.3)
    origin, ask = "https://late.brand.example", {"Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in (await anon.options(
        "/v1/customers", headers={"Origin": origin, **ask})).headers
    assert (await client.patch("/v1/tenant", json={"allowed_origins": [origin]})).status_code == 200
    await asyncio.sleep(0.4)
    assert (await anon.options("/v1/customers", headers={"Origin": origin, **ask})).headers[
        "access-control-allow-origin"] == origin


async def test_a_refusal_before_any_tenant_is_known_is_readable_by_an_origin_some_tenant_allows(client, anon):
    """A browser app whose signature is wrong must be able to read the 401's problem body (and its request id):
    no tenant is known yet, so it gets the CORS headers an origin some tenant allows gets on a preflight."""
    origin, stranger = "https://refused.brand.example", "https://stranger.example"
    assert (await client.patch("/v1/tenant", json={"allowed_origins": [origin]})).status_code == 200
    refused = await anon.get("/v1/customers", headers={"Origin": origin})
    assert refused.status_code == 401 and refused.json()["code"] == "unauthenticated"
    assert refused.headers["access-control-allow-origin"] == origin
    assert "x-request-id" in refused.headers["access-control-expose-headers"]
    too_large = await anon.post("/v1/customers", content=b"x" * (1024 * 1024 + 1), headers={"Origin": origin})
    assert too_large.status_code == 413 and too_large.headers["access-control-allow-origin"] == origin
    other = await anon.get("/v1/customers", headers={"Origin": stranger})
    assert other.status_code == 401 and "access-control-allow-origin" not in other.headers
