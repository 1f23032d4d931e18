"""A dependency that is down answers 503 unavailable quickly, never a hang or a 500."""

from __future__ import annotations

import time
from dataclasses import replace

import httpx

from api.app import create_app
from api.resources import Resources
from hostq.client import HostqSigner


async def test_database_down_is_a_quick_503(settings, tenant):
    down = replace(settings, database_url="postgresql+asyncpg://postgres@127.0.0.1:1/hostq")
    resources = Resources.open(down)
    try:
        app = create_app(down, resources)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                     auth=HostqSigner(tenant["api_key"], tenant["signing_secret"])) as client:
            started = time.monotonic()
            response = await client.get("/v1/customers")
            elapsed = time.monotonic() - started
    finally:
        await resources.close()
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "unavailable" and response.headers["retry-after"]
    assert elapsed < 6  # the connect timeout, not a hang
