"""The outbox: a job recorded while the broker is down is not lost; the relay sends it later."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from sqlalchemy import update

from api.app import create_app
from api.resources import Resources
from domain.db import session_scope
from domain.jobs.models import Job
from domain.jobs.service import stalled_jobs
from schedules import clock
from schedules.clock import broker_lost_its_data, relay_once, resend_if_lost, resend_stalled
from tests.conftest import signed_client
from tests.integration.helpers import add_region, customer_and_plan, order_body
from workers import dispatch as dispatch_module
from workers.dispatch import make_broker


async def test_job_recorded_while_broker_down_is_relayed(settings, sessions, tenant, resources):
    region, _ = await add_region(sessions, settings)
    down = Resources.open(replace(settings, broker_url="redis://127.0.0.1:1/0"))
    try:
        async with signed_client(create_app(settings, down), tenant) as client:
            customer_id, plan = await customer_and_plan(client)
            response = await client.post("/v1/services", json=order_body(customer_id, plan, region))
        assert response.status_code == 202  # accepted: the intent is in Postgres
    finally:
        await down.close()
    job_id = uuid.UUID(response.json()["job"]["id"])
    async with sessions() as session:
        assert (await session.get(Job, job_id)).dispatched_at is None

    queue = f"{settings.namespace}:dramatiq:provisioning.{region}"
    assert await resources.redis.llen(queue) == 0
    broker = make_broker(settings)
    try:
        assert await relay_once(sessions, broker, grace_s=0) >= 1
        assert await relay_once(sessions, broker, grace_s=0) == 0  # once sent, never again
    finally:
        broker.close()
    assert await resources.redis.llen(queue) == 1
    async with sessions() as session:
        assert (await session.get(Job, job_id)).dispatched_at is not None


async def test_dispatched_jobs_are_marked(client, sessions, settings):
    import asyncio
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    job_id = (await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()["job"]["id"]
    for _ in range(50):
        async with sessions() as session:
            if (await session.get(Job, uuid.UUID(job_id))).dispatched_at is not None:
                return
        await asyncio.sleep(0.02)
    raise AssertionError("dispatched job never marked")


async def test_with_rabbitmq_down_an_order_is_accepted_quickly_and_relayed_once_it_is_back(
        settings, sessions, tenant, amqp_url):
    region, _ = await add_region(sessions, settings)
    down = Resources.open(replace(settings, broker_url="amqp://guest:guest@127.0.0.1:1/"))
    try:
        async with signed_client(create_app(settings, down), tenant) as client:
            customer_id, plan = await customer_and_plan(client)
            started = time.monotonic()
            response = await client.post("/v1/services", json=order_body(customer_id, plan, region))
            took = time.monotonic() - started
    finally:
        await down.close()
    assert response.status_code == 202, response.text
    assert took < 5, f"an unreachable RabbitMQ held the order for {took:.1f} s"
    job_id = uuid.UUID(response.json()["job"]["id"])
    async with sessions() as session:
        assert (await session.get(Job, job_id)).dispatched_at is None

    broker = make_broker(replace(settings, broker_url=amqp_url))
    assert isinstance(broker, RabbitmqBroker) and broker.confirm_delivery
    try:
        assert await relay_once(sessions, broker, grace_s=0) >= 1
        assert await relay_once(sessions, broker, grace_s=0) == 0
        assert broker.get_queue_message_counts(f"provisioning.{region}")[0] == 1
    finally:
        broker.close()
    async with sessions() as session:
        assert (await session.get(Job, job_id)).dispatched_at is not None


async def test_a_rabbitmq_that_hangs_holds_no_request_and_a_live_one_gets_the_job_marked(
        settings, sessions, tenant, amqp_url):
    region, _ = await add_region(sessions, settings)
    silent = socket.socket()  # accepts connections, never answers: a RabbitMQ that hangs
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    hung_url = f"amqp://guest:guest@127.0.0.1:{silent.getsockname()[1]}/?stack_timeout=2&socket_timeout=1"
    try:
        hung = Resources.open(replace(settings, broker_url=hung_url))
        async with signed_client(create_app(settings, hung), tenant) as client:
            customer_id, plan = await customer_and_plan(client)
            started = time.monotonic()
            held = await client.post("/v1/services", json=order_body(customer_id, plan, region))
            answered_in = time.monotonic() - started
            probe = await client.get(f"/v1/jobs/{held.json()['job']['id']}")  # the loop is free meanwhile
            probed_in = time.monotonic() - started
        await hung.close()  # waits for the send under way to give up
    finally:
        silent.close()
    assert held.status_code == 202 and probe.status_code == 200, (held.text, probe.text)
    assert answered_in < 1 and probed_in < 1.5, (answered_in, probed_in)  # the send takes 2 s to fail
    async with sessions() as session:
        assert (await session.get(Job, uuid.UUID(held.json()["job"]["id"]))).dispatched_at is None  # for the relay

    live = Resources.open(replace(settings, broker_url=amqp_url))
    try:
        async with signed_client(create_app(settings, live), tenant) as client:
            sent = await client.post("/v1/services", json=order_body(customer_id, plan, region))
    finally:
        await live.close()  # finishes the send and writes its mark
    assert sent.status_code == 202, sent.text
    async with sessions() as session:
        assert (await session.get(Job, uuid.UUID(sent.json()["job"]["id"]))).dispatched_at is not None
    counter = make_broker(replace(settings, broker_url=amqp_url))
    try:
        assert counter.get_queue_message_counts(f"provisioning.{region}")[0] == 1
    finally:
        counter.close()


async def test_marks_added_while_a_flush_is_writing_are_flushed_too(sessions, monkeypatch):
    from api import dispatch_marks
    written, writing, release = [], asyncio.Event(), asyncio.Event()

    async def slow_mark(session, pairs):  # the database write of a flush, held open by the test
        writing.set()
        await release.wait()
        written.extend(pairs)

    monkeypatch.setattr(dispatch_marks, "mark_dispatched", slow_mark)
    marks = dispatch_marks.DispatchMarks(sessions)
    first, second = (uuid.uuid4(), 1), (uuid.uuid4(), 1)
    marks.add(None, [first])
    await asyncio.wait_for(writing.wait(), 5)
    marks.add(None, [second])  # during the first flush's write
    release.set()
    for _ in range(100):
        if second in written:
            break
        await asyncio.sleep(0.01)
    assert written == [first, second]


async def test_jobs_whose_message_was_lost_are_sent_again_once_per_window(client, sessions, settings, resources):
    """A broker that restarted without its data: the jobs table still says queued, retrying or running."""
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    queued_id, retrying_id, running_id, busy_id, unscheduled_id = [uuid.UUID((await client.post(
        "/v1/services", json=order_body(customer_id, plan, region))).json()["job"]["id"]) for _ in range(5)]
    jobs = (queued_id, retrying_id, running_id, busy_id, unscheduled_id)
    key = f"{settings.namespace}:dramatiq:provisioning.{region}"
    for _ in range(100):  # all sent and marked, then lost with the broker's data
        async with sessions() as session:
            if all([(await session.get(Job, j)).dispatched_at for j in jobs]):
                break
        await asyncio.sleep(0.02)
    await resources.redis.delete(key)
    now = datetime.now(timezone.utc)
    long_ago = now - timedelta(minutes=20)
    async with session_scope(sessions) as session:
        await session.execute(update(Job).where(Job.id == queued_id).values(dispatched_at=long_ago))
        await session.execute(update(Job).where(Job.id == retrying_id).values(
            status="retrying", attempts=1, next_attempt_at=long_ago, updated_at=long_ago - timedelta(seconds=30)))
        # Its worker and its message lost together: running, unchanged for longer than an attempt can run.
        await session.execute(update(Job).where(Job.id == running_id).values(
            status="running", attempts=1, updated_at=now - timedelta(minutes=40),
            dispatched_at=now - timedelta(minutes=41)))
        # Running for 15 min: past the 10 min window, not past the (here 30 min) longest attempt.
        await session.execute(update(Job).where(Job.id == busy_id).values(
            status="running", attempts=1, updated_at=now - timedelta(minutes=15),
            dispatched_at=now - timedelta(minutes=16)))
        # Its worker died after recording the failure, before the retry's time was written: no next_attempt_at.
        await session.execute(update(Job).where(Job.id == unscheduled_id).values(
            status="retrying", attempts=1, next_attempt_at=None, updated_at=long_ago))

    broker = make_broker(settings)
    try:
        assert await resend_stalled(sessions, broker, after_s=600, running_after_s=1800) == 4
        assert await resend_stalled(sessions, broker, after_s=600, running_after_s=1800) == 0  # not again soon
        assert await resend_stalled(sessions, broker, after_s=600) == 1  # the other running one, past 10 min
    finally:
        broker.close()
    assert await resources.redis.llen(key) == 5
    async with sessions() as session:
        queued, retrying, running, busy, unscheduled = [await session.get(Job, j) for j in jobs]
    assert unscheduled.status == "retrying" and unscheduled.next_attempt_at > now
    assert queued.status == "queued" and queued.dispatched_at > long_ago + timedelta(minutes=19)
    # sent again now, for the attempt due 20 min ago (which the job still says)
    assert retrying.status == "retrying" and retrying.next_attempt_at == long_ago and retrying.updated_at > now
    # sent again now; the attempt's start stays (the next send waits as long as it had run, at most an hour)
    assert running.status == "running" and running.dispatched_at > now and running.updated_at < now
    assert busy.status == "running" and busy.dispatched_at > now and busy.updated_at < now


async def test_a_broker_that_lost_its_data_gets_its_queued_jobs_at_once_and_its_retrying_ones_when_due(
        client, sessions, settings, resources):
    """Redis restarted without its data (the marker the scheduler keeps there is gone): no waiting for the
    stalled-job window (10 min), and the jobs' rows say what to send again; a retrying job's for when it is due."""
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    queued_id, retrying_id, running_id = [uuid.UUID((await client.post("/v1/services", json=order_body(
        customer_id, plan, region))).json()["job"]["id"]) for _ in range(3)]
    key, marker = f"{settings.namespace}:dramatiq:provisioning.{region}", f"{settings.namespace}:dramatiq:__marker__"
    for _ in range(100):  # all sent and marked
        async with sessions() as session:
            if all([(await session.get(Job, j)).dispatched_at for j in (queued_id, retrying_id, running_id)]):
                break
        await asyncio.sleep(0.02)
    broker = make_broker(settings)
    try:
        broker.client.set(marker, "1")  # the marker as a scheduler keeps it
        assert not broker_lost_its_data(broker, marker)
        assert await resend_if_lost(sessions, broker, marker, None) is None
        assert await resources.redis.llen(key) == 3  # the three as the API sent them, none again
        now = datetime.now(timezone.utc)
        async with session_scope(sessions) as session:
            # Failed a moment ago; its delayed message (due in a minute) was in Redis too.
            await session.execute(update(Job).where(Job.id == retrying_id).values(
                status="retrying", attempts=1, updated_at=now, next_attempt_at=now + timedelta(minutes=1)))
            await session.execute(update(Job).where(Job.id == running_id).values(
                status="running", attempts=1, updated_at=now))
        await resources.redis.delete(key, marker)  # Redis restarts empty

        assert broker_lost_its_data(broker, marker)
        assert await resend_if_lost(sessions, broker, marker, None) is None  # all sent again
        assert not broker_lost_its_data(broker, marker)  # so the next tick sends nothing again
    finally:
        broker.close()

    assert await resources.redis.llen(key) == 1  # the queued job once, for now; not the running one
    # The retrying job's message waits for its next attempt, as the lost one did: the backoff is kept.
    assert await resources.redis.llen(f"{key}.DQ") == 1
    async with sessions() as session:
        queued, retrying, running = [await session.get(Job, j) for j in (queued_id, retrying_id, running_id)]
    assert queued.status == "queued" and queued.dispatched_at > now
    assert retrying.status == "retrying" and retrying.next_attempt_at == now + timedelta(minutes=1)
    assert running.status == "running"


async def test_the_broker_marker_comes_back_only_once_everything_lost_was_sent_again(
        client, sessions, settings, resources, monkeypatch):
    """A tick that fails (Postgres away) or cannot send (the broker refused a moment ago) leaves the marker
    missing: the next tick sends the lost jobs again, instead of taking the marker for 'nothing was lost' and
    leaving them to the stalled sweep (10 minutes)."""
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    ordered = await client.post("/v1/services", json=order_body(customer_id, plan, region))
    job_id = uuid.UUID(ordered.json()["job"]["id"])
    key, marker = f"{settings.namespace}:dramatiq:provisioning.{region}", f"{settings.namespace}:dramatiq:__marker__"
    for _ in range(100):
        async with sessions() as session:
            if (await session.get(Job, job_id)).dispatched_at:
                break
        await asyncio.sleep(0.02)
    await resources.redis.delete(key, marker)  # Redis restarts empty
    broker = make_broker(settings)
    try:
        async def postgres_away(session, before, **filters):
            raise ConnectionRefusedError("Postgres is away")

        with monkeypatch.context() as patch:
            patch.setattr(clock, "lost_with_broker", postgres_away)
            with pytest.raises(ConnectionRefusedError):
                await resend_if_lost(sessions, broker, marker, None)
        assert broker_lost_its_data(broker, marker)

        monkeypatch.setitem(dispatch_module._down_until, broker, time.monotonic() + 60)  # resting after a refusal
        lost_at = await resend_if_lost(sessions, broker, marker, None)
        assert lost_at is not None and broker_lost_its_data(broker, marker)
        assert await resources.redis.llen(key) == 0

        dispatch_module._down_until.pop(broker)
        assert await resend_if_lost(sessions, broker, marker, lost_at) is None
        assert not broker_lost_its_data(broker, marker)
    finally:
        broker.close()
    assert await resources.redis.llen(key) == 1


async def test_the_stalled_sweep_takes_the_longest_waiting_first_not_the_oldest(client, sessions, settings):
    """A backlog the sweep keeps sending again (a region with no worker) must not stay ahead of a message lost
    elsewhere: the sweep takes jobs by when they were last sent, and one sent again goes to the back."""
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    backlog, lost, retrying = [uuid.UUID((await client.post("/v1/services", json=order_body(
        customer_id, plan, region))).json()["job"]["id"]) for _ in range(3)]
    now = datetime.now(timezone.utc)
    async with session_scope(sessions) as session:  # the oldest job, sent again by the last sweep but one
        await session.execute(update(Job).where(Job.id == backlog).values(dispatched_at=now - timedelta(minutes=11)))
        await session.execute(update(Job).where(Job.id == lost).values(dispatched_at=now - timedelta(minutes=30)))
        await session.execute(update(Job).where(Job.id == retrying).values(  # failed 25 min ago, due 20 min ago
            status="retrying", attempts=1, next_attempt_at=now - timedelta(minutes=20),
            updated_at=now - timedelta(minutes=25), dispatched_at=now - timedelta(minutes=30)))
    async with session_scope(sessions) as session:
        found = [job.id for job in await stalled_jobs(session, 600, limit=100_000)]
    assert [j for j in found if j in (backlog, lost, retrying)] == [lost, retrying, backlog]


async def test_the_stalled_sweep_takes_the_queues_in_turn(client, sessions, settings):
    """A region whose stalled backlog fills more than a batch (500 a minute) must not keep another region's lost
    message waiting: each queue's longest-waiting job comes before any queue's second."""
    backlogged, other = (await add_region(sessions, settings))[0], (await add_region(sessions, settings))[0]
    customer_id, plan = await customer_and_plan(client)
    backlog = [uuid.UUID((await client.post("/v1/services", json=order_body(customer_id, plan, backlogged))).json()
                         ["job"]["id"]) for _ in range(3)]
    lost = uuid.UUID((await client.post("/v1/services", json=order_body(customer_id, plan, other))).json()["job"]["id"])
    now = datetime.now(timezone.utc)
    async with session_scope(sessions) as session:
        for n, job_id in enumerate(backlog):  # sent long ago, and longer ago than the lost one
            await session.execute(update(Job).where(Job.id == job_id).values(
                dispatched_at=now - timedelta(minutes=60 - n)))
        await session.execute(update(Job).where(Job.id == lost).values(dispatched_at=now - timedelta(minutes=11)))
    async with session_scope(sessions) as session:
        found = [job.id for job in await stalled_jobs(session, 600, limit=100_000)]
    assert [j for j in found if j in (*backlog, lost)] == [backlog[0], lost, backlog[1], backlog[2]]


def _ago(minutes: float) -> datetime:
    return datetime.now(timezone.utc) - timedelta(minutes=minutes)


async def _found_stalled(client, sessions, settings, rows: list[dict], running_after_s: float | None = None
                         ) -> list[bool]:
    """One order per row, its job's columns set to the row's values: which the stalled sweep (10 min) finds."""
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    ids = [uuid.UUID((await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()
                     ["job"]["id"]) for _ in rows]
    async with session_scope(sessions) as session:
        for job_id, values in zip(ids, rows, strict=True):
            await session.execute(update(Job).where(Job.id == job_id).values(**values))
    async with session_scope(sessions) as session:
        found = {job.id for job in await stalled_jobs(session, 600, running_after_s, limit=100_000)}
    return [job_id in found for job_id in ids]


async def test_a_queued_job_sent_again_waits_longer_each_time(client, sessions, settings):
    """A region without a worker for hours: the sweep sends each queued job again after 10 min, then after as
    long as it had been waiting since first sent (at most an hour), so the broker holds a few copies of each, not
    one more every 10 minutes."""
    # (first sent, last sent): sent once, 11 min ago; sent again 20 min ago, 10 min after the first; 25 min after;
    # 3 h after, 40 min ago and 61 min ago
    rows = [(11, 11), (30, 20), (60, 25), (220, 40), (241, 61)]
    assert await _found_stalled(client, sessions, settings, [
        {"created_at": _ago(first), "updated_at": _ago(first), "dispatched_at": _ago(last)} for first, last in rows
    ]) == [True, True, False, False, True]


@pytest.mark.parametrize("status", ["queued", "retrying"])
async def test_a_job_first_sent_late_is_sent_again_after_the_window(client, sessions, settings, status):
    """A job the relay sent an hour after it was queued, or after its retry was due (the broker was away), and
    whose message was then lost: the backoff counts from that send, so the sweep sends it again after 10 min, not
    after another hour."""
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    job_id = uuid.UUID((await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()
                       ["job"]["id"])
    for _ in range(100):  # sent by the API, and marked
        async with sessions() as session:
            if (await session.get(Job, job_id)).dispatched_at:
                break
        await asyncio.sleep(0.02)
    hour_ago = datetime.now(timezone.utc) - timedelta(hours=1)
    async with session_scope(sessions) as session:  # as if queued (or due) an hour ago and never sent
        await session.execute(update(Job).where(Job.id == job_id).values(
            created_at=hour_ago, updated_at=hour_ago, dispatched_at=None))
        if status == "retrying":  # its retry handed to the relay (tracking.hand_to_relay)
            await session.execute(update(Job).where(Job.id == job_id).values(
                status="retrying", attempts=1, next_attempt_at=hour_ago))
    broker = make_broker(settings)
    try:
        assert await relay_once(sessions, broker, grace_s=5) >= 1
    finally:
        broker.close()
    later = timedelta(minutes=11)
    async with session_scope(sessions) as session:  # 11 minutes pass, its message lost
        await session.execute(update(Job).where(Job.id == job_id).values(
            created_at=Job.created_at - later, updated_at=Job.updated_at - later,
            dispatched_at=Job.dispatched_at - later, next_attempt_at=Job.next_attempt_at - later))
        assert job_id in {job.id for job in await stalled_jobs(session, 600, limit=100_000)}


async def test_a_retrying_job_sent_again_waits_longer_each_time(client, sessions, settings):
    """The same for a job whose next attempt is overdue: sent again 10 min past due, then after as long as it was
    overdue when last sent (at most an hour)."""
    # (due, failed or last sent): never sent again; sent again 11 min ago, 10 min past due; 25 min past due, 20 min
    # ago; 3 h past due, 40 min ago and 61 min ago; failed 30 min ago, due only 5 min ago
    rows = [(15, 20), (21, 11), (45, 20), (220, 40), (241, 61), (5, 30)]
    assert await _found_stalled(client, sessions, settings, [
        {"status": "retrying", "attempts": 1, "next_attempt_at": _ago(due), "updated_at": _ago(sent),
         "dispatched_at": _ago(300)}  # (set, or the API marking it sent would lock it as the sweep looks)
        for due, sent in rows]) == [True, True, False, False, True, False]


async def test_a_running_job_sent_again_waits_longer_each_time(client, sessions, settings):
    """A job left running by a dead worker in a region with no other worker: sent again once its attempt is older
    than the longest one can run (here 30 min), then after as long as it had run when last sent (at most an
    hour)."""
    # (attempt started, last sent): before it started; 1 min ago, after 40 min; 55 min ago, after 45 min; 30 min
    # ago, after 70 min; an attempt of 20 min only
    rows = [(40, 45), (41, 1), (100, 55), (100, 30), (20, 25)]
    assert await _found_stalled(client, sessions, settings, [
        {"status": "running", "attempts": 1, "updated_at": _ago(started), "dispatched_at": _ago(sent)}
        for started, sent in rows], running_after_s=1800) == [True, False, True, False, False]


@pytest.mark.parametrize("first", ["relay", "resend_lost"])
async def test_a_retrying_job_handed_to_the_relay_is_sent_once_whoever_sends_it(
        client, sessions, settings, resources, first):
    """A worker could not send a retry back (tracking.hand_to_relay): the relay, the stalled sweep and the resend
    after a broker's loss may each find the job in one tick; only the first sends it."""
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    job_id = uuid.UUID((await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()
                       ["job"]["id"])
    key = f"{settings.namespace}:dramatiq:provisioning.{region}"
    for _ in range(100):  # sent and marked
        async with sessions() as session:
            if (await session.get(Job, job_id)).dispatched_at:
                break
        await asyncio.sleep(0.02)
    await resources.redis.delete(key)
    long_ago = datetime.now(timezone.utc) - timedelta(minutes=20)
    async with session_scope(sessions) as session:  # overdue, its retry refused by the broker, marked unsent
        await session.execute(update(Job).where(Job.id == job_id).values(
            status="retrying", attempts=1, next_attempt_at=long_ago, updated_at=long_ago, dispatched_at=None))
    broker = make_broker(settings)
    try:
        # (other tests' jobs share the database: this region's queue holds this job's messages only)
        if first == "relay":
            await relay_once(sessions, broker, grace_s=5)
        else:
            await clock.resend_lost(sessions, broker, datetime.now(timezone.utc))
        assert await resources.redis.llen(key) == 1  # due already: sent at once
        await relay_once(sessions, broker, grace_s=0)
        await resend_stalled(sessions, broker, after_s=600)
        await clock.resend_lost(sessions, broker, long_ago + timedelta(minutes=1))
    finally:
        broker.close()
    assert await resources.redis.llen(key) == 1  # and by no one else


async def test_a_queue_the_broker_refuses_holds_up_no_other_region(client, sessions, settings, resources):
    """One region's queue refusing sends (here a Redis key of the wrong type) leaves that region's jobs to the
    relay; every other region's are sent, by the API and by the relay, as if nothing were wrong."""
    broken, healthy = (await add_region(sessions, settings))[0], (await add_region(sessions, settings))[0]
    customer_id, plan = await customer_and_plan(client)
    prefix = f"{settings.namespace}:dramatiq:provisioning"
    await resources.redis.set(f"{prefix}.{broken}.msgs", "not a hash")
    try:
        ids = {region: [uuid.UUID((await client.post("/v1/services", json=order_body(
            customer_id, plan, region))).json()["job"]["id"]) for _ in range(3)] for region in (broken, healthy)}
        for _ in range(100):  # the API sent the healthy region's, in spite of the refusals
            if await resources.redis.llen(f"{prefix}.{healthy}") == 3:
                break
            await asyncio.sleep(0.02)
        assert await resources.redis.llen(f"{prefix}.{healthy}") == 3
        async with session_scope(sessions) as session:  # and now all six wait for the relay
            await session.execute(update(Job).where(Job.id.in_(ids[broken] + ids[healthy])).values(
                dispatched_at=None, updated_at=datetime.now(timezone.utc) - timedelta(minutes=1)))
        await resources.redis.delete(f"{prefix}.{healthy}", f"{prefix}.{healthy}.msgs")
        broker = make_broker(settings)
        try:
            await relay_once(sessions, broker, grace_s=5)
            assert await resources.redis.llen(f"{prefix}.{healthy}") == 3
            assert dispatch_module.resting_queues(broker) == [f"provisioning.{broken}"]
            await resources.redis.delete(f"{prefix}.{broken}.msgs")  # fixed
            await relay_once(sessions, broker, grace_s=5)  # still resting: not tried yet
            assert await resources.redis.llen(f"{prefix}.{broken}") == 0
            dispatch_module._queue_down_until[broker].clear()  # its rest is over
            await relay_once(sessions, broker, grace_s=5)
            assert await resources.redis.llen(f"{prefix}.{broken}") == 3
        finally:
            broker.close()
    finally:
        await resources.redis.delete(f"{prefix}.{broken}.msgs")


async def test_a_rabbitmq_queue_refusing_publishes_rests_alone(amqp_url, settings):
    """A RabbitMQ queue at its length limit with overflow reject-publish nacks every message (Dramatiq reports a
    ConnectionClosed): only that queue rests; another queue's messages are sent in the same batch."""
    import shutil
    import subprocess
    from types import SimpleNamespace

    import pika
    from urllib.parse import urlsplit

    vhost = urlsplit(amqp_url).path.lstrip("/")
    full, ok = f"provisioning.full{uuid.uuid4().hex[:6]}", f"provisioning.ok{uuid.uuid4().hex[:6]}"
    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl is None:
        pytest.skip("needs rabbitmqctl to set a queue's policy")  # (HOSTQ_TEST_AMQP_URL on another machine)
    policy = ["set_policy", "-p", vhost, "--apply-to", "queues", full, f"^{full}$",
              '{"max-length": 0, "overflow": "reject-publish"}']
    subprocess.run([rabbitmqctl, *policy], check=True, capture_output=True, timeout=60)
    # and a queue declared beforehand with other arguments than Dramatiq's: its channel is closed (406)
    clash = f"provisioning.clash{uuid.uuid4().hex[:6]}"
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    connection.channel().queue_declare(queue=clash, durable=True)
    connection.close()
    jobs = [SimpleNamespace(id=uuid.uuid4(), round=1, queue=queue, kind="provision.create", resource_id=None,
                            request_id=None, status="queued", next_attempt_at=None)
            for queue in (full, ok, clash, full, ok)]
    broker = make_broker(replace(settings, broker_url=amqp_url))
    try:
        assert dispatch_module.dispatch(broker, jobs) == [(j.id, 1) for j in jobs if j.queue == ok]
        assert sorted(dispatch_module.resting_queues(broker)) == sorted([full, clash])
    finally:
        broker.close()
        subprocess.run([rabbitmqctl, "clear_policy", "-p", vhost, full], capture_output=True, timeout=60)


@pytest.mark.parametrize("broken_key", ["msgs", "DQ.msgs"])
async def test_after_a_broker_loss_a_refusing_queue_holds_up_no_other_region(client, sessions, settings, resources,
                                                                               monkeypatch, broken_key):
    """The resend after the broker's Redis lost its data leaves a resting queue's jobs out (a backlog of theirs
    takes no batch from the others), and writes the marker back only once they are sent too. Its delay queue
    refusing (its jobs retrying, sent for later) rests it alike."""
    broken, healthy = (await add_region(sessions, settings))[0], (await add_region(sessions, settings))[0]
    customer_id, plan = await customer_and_plan(client)
    prefix, marker = f"{settings.namespace}:dramatiq:provisioning", f"{settings.namespace}:dramatiq:__marker__"
    for region in (broken, broken, broken, healthy):  # the broken region's backlog comes first
        assert (await client.post("/v1/services", json=order_body(customer_id, plan, region))).status_code == 202
    for _ in range(100):
        if await resources.redis.llen(f"{prefix}.{healthy}") == 1:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)  # the dispatched marks are written
    monkeypatch.setattr(clock, "lost_with_broker", _limited(clock.lost_with_broker, 3))  # batches of 3
    if broken_key == "DQ.msgs":  # the broken region's jobs failed an attempt: retrying, due in a minute
        async with session_scope(sessions) as session:
            await session.execute(update(Job).where(Job.queue == f"provisioning.{broken}").values(
                status="retrying", attempts=1, updated_at=datetime.now(timezone.utc) - timedelta(seconds=5),
                next_attempt_at=datetime.now(timezone.utc) + timedelta(minutes=1)))
    await resources.redis.delete(f"{prefix}.{broken}", f"{prefix}.{broken}.msgs", f"{prefix}.{healthy}",
                                 f"{prefix}.{healthy}.msgs", marker)  # the broker's Redis lost its data
    await resources.redis.set(f"{prefix}.{broken}.{broken_key}", "not a hash")  # and one region's queue refuses
    broker = make_broker(settings)
    try:
        lost_at = None
        for _ in range(3):  # ticks
            lost_at = await resend_if_lost(sessions, broker, marker, lost_at)
        assert lost_at is not None and not await resources.redis.exists(marker)  # not done: the broken ones
        assert await resources.redis.llen(f"{prefix}.{healthy}") == 1  # but the healthy region's job went
        await resources.redis.delete(f"{prefix}.{broken}.{broken_key}")  # fixed
        dispatch_module._queue_down_until[broker].clear()  # its rest is over
        assert await resend_if_lost(sessions, broker, marker, lost_at) is None
        sent_to = f"{prefix}.{broken}.DQ" if broken_key == "DQ.msgs" else f"{prefix}.{broken}"
        assert await resources.redis.llen(sent_to) == 3 and await resources.redis.exists(marker)
    finally:
        broker.close()
        await resources.redis.delete(f"{prefix}.{broken}.{broken_key}")


def _limited(find, limit: int):
    async def limited(session, before, **kwargs):
        return await find(session, before, limit=kwargs.pop("limit", limit), **kwargs)
    return limited
