"""`hostq dev`'s fake WHM servers across runs (hostq.admin.register_sandboxes)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select, update

from domain.db import session_scope
from domain.provisioning.models import WhmServer
from domain.services.models import Service
from hostq.admin import SANDBOX_PREFIX, register_sandboxes
from tests.conftest import free_port
from tests.integration.helpers import customer_and_plan, order_body


async def _sandbox(sessions, region: str) -> WhmServer:
    async with session_scope(sessions) as session:
        return await session.scalar(select(WhmServer).where(WhmServer.name == SANDBOX_PREFIX + region))


async def test_a_port_whose_earlier_fake_still_serves_another_regions_services_is_refused(client, sessions,
                                                                                          settings):
    """Run 1 starts regions a and b; run 2 starts only a, on the port b's fake had: b's services (a worker of b, a
    retry) would reach a's fake, where a terminate finds nothing and calls it done. Refused, changing nothing,
    while one of them is not terminated; allowed once they all are."""
    first, second = f"a{uuid.uuid4().hex[:6]}", f"b{uuid.uuid4().hex[:6]}"
    url_a, url_b = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    await register_sandboxes(settings, {first: url_a, second: url_b})
    customer_id, plan = await customer_and_plan(client)
    ordered = await client.post("/v1/services", json=order_body(customer_id, plan, second))
    assert ordered.status_code == 202, ordered.text

    with pytest.raises(ValueError, match=f"{url_b} was the fake WHM of region {second} in an earlier run, and 1 "
                                         f"service\\(s\\) not terminated are on it: this run's fake of region {first}"):
        await register_sandboxes(settings, {first: url_b})
    assert ((await _sandbox(sessions, first)).url, (await _sandbox(sessions, second)).enabled) == (url_a, True)

    moved = f"http://127.0.0.1:{free_port()}"  # another port: b's fake is simply not started
    assert await register_sandboxes(settings, {first: moved}) == ([second], {first: str(
        (await _sandbox(sessions, first)).id)})
    async with session_scope(sessions) as session:
        await session.execute(update(Service).where(Service.id == uuid.UUID(ordered.json()["service"]["id"]))
                              .values(status="terminated"))
    retired, _ = await register_sandboxes(settings, {first: url_b})  # nothing of b's can act any more
    assert retired == [] and (await _sandbox(sessions, first)).url == url_b
