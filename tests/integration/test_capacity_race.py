"""Placement under concurrency: a server's live-service counter (migration 0009) and its row lock."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from collections import Counter
from datetime import datetime, timezone

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from domain.db import session_scope
from domain.jobs.models import Job
from domain.provisioning.models import WhmServer
from domain.services.models import Service
from domain.services.rules import STATUSES, holds_place
from hostq.admin import list_servers
from tests.integration.helpers import add_region, customer_and_plan, order_body

async def _used(sessions, server_id: uuid.UUID) -> tuple[int, int]:
    """The server's counter, and its services counted by the domain's rule (services.rules.holds_place)."""
    async with sessions() as session:
        used = await session.scalar(select(WhmServer.used).where(WhmServer.id == server_id))
        rows = (await session.execute(select(Service.status, Service.create_attempted_at).where(
            Service.server_id == server_id))).all()
    return used, sum(holds_place(status, attempted is not None) for status, attempted in rows)


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


async def test_no_service_becomes_live_on_a_server_without_room_whatever_the_code_path(client, sessions, settings):
    region, server_id = await add_region(sessions, settings, capacity=2)
    customer_id, plan = await customer_and_plan(client)
    ids = [uuid.UUID((await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()
                     ["service"]["id"]) for _ in range(2)]
    async with session_scope(sessions) as session:
        await session.execute(update(Service).where(Service.id == ids[0]).values(status="failed"))
    assert await _used(sessions, server_id) == (1, 1)
    again = await client.post("/v1/services", json=order_body(customer_id, plan, region))  # takes the room
    assert again.status_code == 202
    # Bypassing every check in the code (no_room_again, placement): the database itself refuses.
    with pytest.raises(IntegrityError) as refused:
        async with session_scope(sessions) as session:
            await session.execute(update(Service).where(Service.id == ids[0]).values(status="provisioning"))
    assert refused.value.orig.sqlstate == "23514" and "has no room for another service" in str(refused.value)
    assert await _used(sessions, server_id) == (2, 2)
    async with session_scope(sessions) as session:
        assert await session.scalar(select(Service.status).where(Service.id == ids[0])) == "failed"
        # Lowering the capacity under the count is allowed; live-to-live moves still pass; nothing new fits.
        await session.execute(update(WhmServer).where(WhmServer.id == server_id).values(capacity=1))
        await session.execute(update(Service).where(Service.id == ids[1]).values(status="suspended"))
    assert await _used(sessions, server_id) == (2, 2)
    full = await client.post("/v1/services", json=order_body(customer_id, plan, region))
    assert full.status_code == 422 and full.json()["code"] == "no_capacity"


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
    assert await _used(sessions, first) == (2, 2)
    # The counter's backstop (migration 0011): a service never becomes live on a server with no room.
    with pytest.raises(IntegrityError, match="has no room for another service"):
        await move(on_first[1], server_id=second)
    assert await _used(sessions, first) == (2, 2) and await _used(sessions, second) == (2, 2)
    async with session_scope(sessions) as session:
        await session.execute(update(WhmServer).where(WhmServer.id == second).values(capacity=3))
    await move(on_first[1], server_id=second)  # moved: counted on the other server
    assert await _used(sessions, first) == (1, 1) and await _used(sessions, second) == (3, 3)
    async with session_scope(sessions) as session:
        await session.execute(Service.__table__.delete().where(Service.id == uuid.UUID(on_first[1])))
    assert await _used(sessions, second) == (2, 2)


def _hostq(hostq_cmd, test_env, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([*hostq_cmd, *argv], env={**os.environ, **test_env}, capture_output=True, text=True,
                          timeout=60)


def test_hostq_servers_add_list_and_update(settings, test_env, hostq_cmd):
    region, url = f"l{uuid.uuid4().hex[:8]}", f"https://whm-{uuid.uuid4().hex[:8]}.example:2087"
    added = _hostq(hostq_cmd, test_env, "servers", "add", "--region", region, "--url", url, "--username", "root",
                   "--token", "t", "--capacity", "7")
    assert added.returncode == 0, added.stderr
    server_id = json.loads(added.stdout)["server_id"]
    listed = _hostq(hostq_cmd, test_env, "servers", "list", "--region", region)
    assert listed.returncode == 0, listed.stderr
    line = {"server_id": server_id, "region": region, "name": url, "url": url, "capacity": 7, "used": 0,
            "enabled": True}
    assert [json.loads(out) for out in listed.stdout.splitlines()] == [line]

    # The same WHM again (a re-run script, a trailing slash): refused, naming the server it already is.
    again = _hostq(hostq_cmd, test_env, "servers", "add", "--region", "other", "--url", url + "/", "--username",
                   "root", "--token", "t")
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr.strip() == f"hostq: a server at {url} is already registered: {server_id} in region '{region}'"

    moved = url.replace(":2087", ":2088")
    updated = _hostq(hostq_cmd, test_env, "servers", "update", "--server", server_id, "--disable", "--capacity", "3",
                     "--url", moved)
    assert updated.returncode == 0, updated.stderr
    assert json.loads(updated.stdout) == {**line, "url": moved, "capacity": 3, "enabled": False}
    for argv, error in ((["--server", server_id], "hostq: nothing to change"),
                        (["--server", str(uuid.uuid4()), "--enable"], "hostq: no such server"),
                        (["--server", server_id, "--capacity", "0"], "hostq: capacity must be at least 1"),
                        (["--server", server_id, "--name", " "], "hostq: name may not be empty"),
                        (["--server", server_id, "--token", ""], "hostq: token may not be empty"),
                        (["--server", server_id, "--url", "http://"], "hostq: url 'http://' needs a host"),
                        (["--server", server_id, "--url", "http://h.example:99999"], "hostq: url 'http://h.example"),
                        (["--server", server_id, "--url", "https://root:pw@h.example:2087"],
                         "hostq: url must not carry credentials"),
                        (["--server", server_id, "--url", "https://h.example:2087/?x=1"], "hostq: url 'https://h")):
        refused = _hostq(hostq_cmd, test_env, "servers", "update", *argv)
        assert refused.returncode == 1 and refused.stderr.startswith(error), refused.stderr
    listed = _hostq(hostq_cmd, test_env, "servers", "list", "--region", region)
    assert json.loads(listed.stdout) == {**line, "url": moved, "capacity": 3, "enabled": False}


async def test_a_disabled_server_takes_no_order_and_an_enabled_one_does_again(client, sessions, settings):
    from domain.provisioning.service import update_server
    region, server_id = await add_region(sessions, settings, capacity=5)
    customer_id, plan = await customer_and_plan(client)
    async with session_scope(sessions) as session:
        await update_server(session, settings.require_kek(), server_id, enabled=False)
    refused = await client.post("/v1/services", json=order_body(customer_id, plan, region))
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "no_capacity" and "disabled" in refused.json()["detail"]
    async with session_scope(sessions) as session:
        await update_server(session, settings.require_kek(), server_id, enabled=True)
    accepted = await client.post("/v1/services", json=order_body(customer_id, plan, region))
    assert accepted.status_code == 202 and accepted.json()["service"]["server_id"] == str(server_id)


async def test_a_failed_service_whose_account_may_exist_keeps_its_place(client, sessions, settings):
    """Every status, with and without a createacct sent: the counter moves exactly as holds_place says, and a
    failed service in doubt (its account may be on WHM) keeps its place against new orders (migration 0012)."""
    region, server_id = await add_region(sessions, settings, capacity=2)
    customer_id, plan = await customer_and_plan(client)
    orders = [(await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()
              for _ in range(2)]
    ids = [uuid.UUID(order["service"]["id"]) for order in orders]
    async with session_scope(sessions) as session:  # the second one's create gave up
        await session.execute(update(Job).where(Job.id == uuid.UUID(orders[1]["job"]["id"])).values(
            status="failed", finished_at=datetime.now(timezone.utc)))

    async def move(**values) -> None:
        async with session_scope(sessions) as session:
            await session.execute(update(Service).where(Service.id == ids[1]).values(**values))

    seen = []
    for attempted in (None, datetime.now(timezone.utc), None):
        for status in (*STATUSES, "provisioning"):
            await move(status=status, create_attempted_at=attempted)
            used, counted = await _used(sessions, server_id)
            assert used == counted, (status, attempted)
            seen.append((status, attempted is not None, used))
    assert ("failed", True, 2) in seen and ("failed", False, 1) in seen and ("terminated", True, 1) in seen

    await move(status="failed", create_attempted_at=datetime.now(timezone.utc))
    full = await client.post("/v1/services", json=order_body(customer_id, plan, region))
    assert full.status_code == 422 and full.json()["code"] == "no_capacity", full.text
    again = await client.post(f"/v1/provision/{ids[1]}")  # it holds its place: no room needed
    assert again.status_code == 202 and again.json()["service"]["status"] == "provisioning", again.text
    assert await _used(sessions, server_id) == (2, 2)
