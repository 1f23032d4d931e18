"""Small builders shared by integration tests."""

from __future__ import annotations

import uuid

from domain.db import session_scope
from domain.provisioning.service import add_server


async def add_region(sessions, settings, region: str | None = None, *, capacity: int = 100,
                     url: str = "http://127.0.0.1:9") -> tuple[str, uuid.UUID]:
    """Register a WHM server in a fresh (or given) region; returns (region, server_id). Many such servers share
    one URL (most never answer): `unique_url=False` lets them, where `hostq servers add` would refuse."""
    region = region or f"r{uuid.uuid4().hex[:8]}"
    async with session_scope(sessions) as session:
        server = await add_server(session, settings.require_kek(), region=region, url=url, username="root",
                                  token="sandbox", capacity=capacity, unique_url=False)
    return region, server.id


async def customer_and_plan(client) -> tuple[str, str]:
    """A customer id and a plan code of the client's tenant."""
    customer = (await client.post("/v1/customers", json={"name": "Ana", "email": "ana@example.com"})).json()
    code = f"p{uuid.uuid4().hex[:6]}"
    response = await client.post("/v1/plans", json={"code": code, "name": "Basic", "whm_package": "basic",
                                                    "prices": {"monthly": 6990, "annual": 69900}})
    assert response.status_code == 201, response.text
    return customer["id"], code


def order_body(customer_id: str, plan: str, region: str, **extra) -> dict:
    """An order with a unique domain, provisioned now."""
    return {"customer_id": customer_id, "plan": plan, "domain": f"d{uuid.uuid4().hex[:10]}.example.com",
            "region": region, "billing_cycle": "monthly", "provision": "now", **extra}
