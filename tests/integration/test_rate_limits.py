"""Per-tenant rate limits (api-v1.md, 'Rate limits'): burst, 429 problem, refill, headers, two processes, Redis down."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace


from api.ratelimit import RateLimiter
from domain.redis_pipe import PipelinedRedis
from tests.conftest import make_tenant, signed_client

RATE_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


async def test_a_burst_of_n_passes_and_the_next_is_a_429_problem(app, sessions, settings):
    creds = await make_tenant(sessions, settings, rate_limit=5)
    other = await make_tenant(sessions, settings, rate_limit=5)
    async with signed_client(app, creds) as c, signed_client(app, other) as o:
        remaining = []
        for _ in range(5):
            response = await c.get("/v1/customers")
            assert response.status_code == 200
            assert response.headers["x-ratelimit-limit"] == "5"
            remaining.append(int(response.headers["x-ratelimit-remaining"]))
        assert remaining == [4, 3, 2, 1, 0]

        refused = await c.get("/v1/customers")
        assert refused.status_code == 429
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["code"] == "rate_limited"
        assert refused.json()["request_id"] == refused.headers["x-request-id"]
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["x-ratelimit-limit"] == "5"
        assert refused.headers["x-ratelimit-remaining"] == "0"
        # The bucket is full again one minute after the burst (5 tokens at 12 s each).
        assert time.time() < int(refused.headers["x-ratelimit-reset"]) <= time.time() + 61

        untouched = await o.get("/v1/customers")
        assert untouched.status_code == 200
        assert untouched.headers["x-ratelimit-remaining"] == "4"


async def test_the_limit_holds_across_two_api_processes(settings, sessions):
    from api.app import create_app
    from api.resources import Resources
    creds = await make_tenant(sessions, settings, rate_limit=10)
    first, second = Resources.open(settings), Resources.open(settings)
    try:
        async with signed_client(create_app(settings, first), creds) as a, \
                signed_client(create_app(settings, second), creds) as b:
            responses = await asyncio.gather(*[(a if i % 2 else b).get("/v1/customers") for i in range(30)])
        statuses = sorted(r.status_code for r in responses)
        others = [(r.status_code, r.text) for r in responses if r.status_code not in (200, 429)]
        assert statuses.count(200) == 10 and statuses.count(429) == 20, (statuses, others)
    finally:
        await first.close()
        await second.close()


async def test_tokens_come_back_at_n_per_minute(resources, settings):
    now = [1_800_000_000.0]
    limiter = RateLimiter(PipelinedRedis(settings.redis_url), settings.namespace, clock=lambda: now[0])
    tenant_id = uuid.uuid4()  # 120 a minute: one token every 0.5 s
    for expected in range(119, -1, -1):
        assert (await limiter.hit(tenant_id, 120)).remaining == expected
    refused = await limiter.hit(tenant_id, 120)
    assert not refused.allowed and refused.retry_after == 1 and refused.reset == 1_800_000_060

    now[0] += 0.4
    assert not (await limiter.hit(tenant_id, 120)).allowed
    now[0] += 0.1
    again = await limiter.hit(tenant_id, 120)
    assert again.allowed and again.remaining == 0
    assert not (await limiter.hit(tenant_id, 120)).allowed

    now[0] += 10  # 20 tokens back
    assert (await limiter.hit(tenant_id, 120)).remaining == 19
    now[0] += 3600  # full again, never more than full
    assert (await limiter.hit(tenant_id, 120)).remaining == 119


async def test_refill_in_real_time_over_http(app, resources, sessions, settings):
    creds = await make_tenant(sessions, settings, rate_limit=120)
    limiter = resources.limiter
    while (await limiter.hit(creds["tenant_id"], 120)).allowed:  # drain the bucket (Redis's clock)
        pass
    async with signed_client(app, creds) as c:
        assert (await c.get("/v1/customers")).status_code == 429
        await asyncio.sleep(0.6)
        passed = await c.get("/v1/customers")
        assert passed.status_code == 200 and passed.headers["x-ratelimit-remaining"] == "0"
        assert (await c.get("/v1/customers")).status_code == 429


async def test_headers_are_on_handler_errors_too(client, anon):
    missing = await client.get(f"/v1/customers/{uuid.uuid4()}")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    invalid = await client.post("/v1/customers", json={"name": "Ana"})
    assert invalid.status_code == 400 and invalid.json()["code"] == "validation_error"
    for response in (missing, invalid):
        assert all(name in response.headers for name in RATE_HEADERS), response.headers
    assert int(invalid.headers["x-ratelimit-remaining"]) == int(missing.headers["x-ratelimit-remaining"]) - 1
    unsigned = await anon.get("/v1/customers")
    assert unsigned.status_code == 401
    assert "x-ratelimit-limit" not in unsigned.headers  # not attributable to a tenant: no bucket


async def test_redis_down_fails_open_without_headers(settings, tenant):
    from api.app import create_app
    from api.resources import Resources
    broken = Resources.open(replace(settings, redis_url="redis://127.0.0.1:1/0"))
    try:
        async with signed_client(create_app(settings, broken), tenant) as c:
            started = time.monotonic()
            first, second = await c.get("/v1/customers"), await c.get("/v1/customers")
            elapsed = time.monotonic() - started
        for response in (first, second):
            assert response.status_code == 200
            assert "x-ratelimit-limit" not in response.headers
        assert elapsed < 2
    finally:
        await broken.close()


async def test_a_new_limit_applies_to_the_next_request(app, sessions, settings):
    from domain.db import session_scope
    from domain.tenants.service import update_tenant
    creds = await make_tenant(sessions, settings, rate_limit=2)
    async with signed_client(app, creds) as c:
        assert [(await c.get("/v1/customers")).status_code for _ in range(3)] == [200, 200, 429]
        async with session_scope(sessions) as session:
            await update_tenant(session, creds["slug"], rate_limit=600)
        # As `hostq tenants update` does after its commit: the API processes' key caches learn of it.
        from api.ratelimit import tenant_generation_key
        from hostq.admin import announce_change
        await asyncio.to_thread(announce_change, settings, tenant_generation_key(settings.namespace,
                                                                                 creds["tenant_id"]))
        # The bucket stays empty, but now refills at 10 tokens a second.
        await asyncio.sleep(0.25)
        response = await c.get("/v1/customers")
        assert response.status_code == 200 and response.headers["x-ratelimit-limit"] == "600"
