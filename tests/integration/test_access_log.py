"""The access log: one JSON line per request with request_id, tenant, route, status and duration."""

from __future__ import annotations

import io
import json

import httpx

from api.access_log import AccessLog
from hostq.client import HostqSigner


async def test_one_json_line_per_request(app, tenant):
    stream = io.StringIO()
    logged = AccessLog(app, stream)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=logged), base_url="http://t",
                                 auth=HostqSigner(tenant["api_key"], tenant["signing_secret"])) as c:
        ok = await c.get("/v1/customers/00000000-0000-0000-0000-000000000000", headers={"X-Request-Id": "log-1"})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=logged), base_url="http://t") as anon:
        await anon.get("/nowhere")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert ok.status_code == 404
    first, second = lines
    assert first["request_id"] == "log-1" and first["tenant"] == str(tenant["tenant_id"])
    assert first["route"] == "/v1/customers/{customer_id}" and first["status"] == 404
    assert first["method"] == "GET" and first["duration_ms"] >= 0
    assert second["tenant"] is None and second["status"] == 404 and second["route"] == "/nowhere"
