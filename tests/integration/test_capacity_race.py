"""Placement under concurrency: a server's live-service counter (migration 0009) and its row lock."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from collections import Counter

from sqlalchemy import func, select, update

from domain.db import session_scope
from domain.provisioning.models import WhmServer
from domain.services.models import Service
from hostq.admin import list_servers
from tests.integration.helpers import add_region, customer_and_plan, order_body

LIVE = ("pending", "provisioning", "active", "suspended")


async def _used(sessions, server_id: uuid.UUID) -> tuple[int, int]:
    """The server's counter and its live services counted."""
    async with sessions() as session:
        used = await session.scalar(select(WhmServer.used).where(WhmServer.id == server_id))
        counted = await session.scalar(select(func.count()).select_from(Service).where(
            Service.server_id == server_id, Service.status.in_(LIVE)))
    return used, counted


async def test_concurrent_orders_never_overfill_a_server(client, sessions, settings):
    region, server_id = await add_region(sessions, settings, capacity=5)
    customer_id, plan = await customer_and_plan(client)
    answers = await asyncio.gather(*(client.post("/v1/services", json=order_body(customer_id, plan, region),
                                                 headers={"Idempotency-Key": f"k-{uuid.uuid4()}"} if n % 2 else {})
                                     for n in range(30)))
    codes = Counter(a.status_code for a in answers)
    assert codes == {202: 5, 422: 25}, codes
    assert {a.json()["code"] for a in answers if a.status_code == 422} == {"no_capacity"}
    assert await _used(sessions, server_id) == (5, 5)


async def test_concurrent_orders_spill_over_to_the_region_s_other_server(client, sessions, settings):
    region, first = await add_region(sessions, settings, capacity=3)
    _, second = await add_region(sessions, settings, region, capacity=3)
    customer_id, plan = await customer_and_plan(client)
    answers = await asyncio.gather(*(client.post("/v1/services", json=order_body(customer_id, plan, region))
                                     for _ in range(10)))
    placed = Counter(a.json()["service"]["server_id"] for a in answers if a.status_code == 202)
    assert placed == {str(first): 3, str(second): 3}, [a.text for a in answers]
    assert sum(a.status_code == 422 for a in answers) == 4


async def test_the_counter_follows_the_service_s_life(client, sessions, settings):
    region, first = await add_region(sessions, settings, capacity=2)
    _, second = await add_region(sessions, settings, region, capacity=2)
    customer_id, plan = await customer_and_plan(client)
    ids = [(await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()["service"]["id"]
           for _ in range(4)]
    assert await _used(sessions, first) == (2, 2) and await _used(sessions, second) == (2, 2)
    assert [(s["server_id"], s["used"], s["capacity"]) for s in await list_servers(settings, region=region)] == \
        sorted([(str(first), 2, 2), (str(second), 2, 2)])
    full = await client.post("/v1/services", json=order_body(customer_id, plan, region))
    assert full.status_code == 422 and full.json()["code"] == "no_capacity"

    async def move(service_id: str, **values) -> None:
        async with session_scope(sessions) as session:
            await session.execute(update(Service).where(Service.id == uuid.UUID(service_id)).values(**values))

    on_first = [i for i in ids if (await client.get(f"/v1/services/{i}")).json()["server_id"] == str(first)]
    await move(on_first[0], status="active")  # live to live: no change
    assert await _used(sessions, first) == (2, 2)
    await move(on_first[0], status="terminated")  # no longer live: room again
    assert await _used(sessions, first) == (1, 1)
    again = await client.post("/v1/services", json=order_body(customer_id, plan, region))
    assert again.status_code == 202 and again.json()["service"]["server_id"] == str(first)
    await move(on_first[1], status="failed")
    await move(on_first[1], status="provisioning")  # provisioned again: live, on its own server
    await move(on_first[1], server_id=second)  # moved: counted on the other server
    assert await _used(sessions, first) == (1, 1) and await _used(sessions, second) == (3, 3)
    async with session_scope(sessions) as session:
        await session.execute(Service.__table__.delete().where(Service.id == uuid.UUID(on_first[1])))
    assert await _used(sessions, second) == (2, 2)


def test_hostq_servers_list_prints_each_server_s_load(settings, test_env, hostq_cmd):
    added = subprocess.run([*hostq_cmd, "servers", "add", "--region", "listed", "--url", "http://127.0.0.1:9",
                            "--username", "root", "--token", "t", "--capacity", "7"],
                           env={**os.environ, **test_env}, capture_output=True, text=True, timeout=60)
    assert added.returncode == 0, added.stderr
    listed = subprocess.run([*hostq_cmd, "servers", "list", "--region", "listed"],
                            env={**os.environ, **test_env}, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    lines = [json.loads(line) for line in listed.stdout.splitlines()]
    assert lines == [{"server_id": json.loads(added.stdout)["server_id"], "region": "listed",
                      "name": "http://127.0.0.1:9", "url": "http://127.0.0.1:9", "capacity": 7, "used": 0,
                      "enabled": True}]
