"""A real Dramatiq worker on real Redis and Postgres keeps the job row honest through retries and failures."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import time

import asyncpg
import dramatiq
import pytest
from sqlalchemy import select, update

from domain.db import make_engine, make_sessionmaker, session_scope
from domain.errors import PermanentIntegrationError, TransientIntegrationError
from domain.jobs import tracking
from domain.jobs.models import Job, JobAttempt
from domain.jobs.service import record_job
from domain.redis_pipe import PipelinedRedis
from schedules.clock import relay_once
from workers.broker import setup_broker
from workers.dispatch import dispatch, job_message
from workers.heartbeat import Holder
from workers.locks import RedisLock
from workers.middleware import Attempt, JobStateMiddleware, _say_ended, job_actor
from workers.pg import SystemPool

CALLS: dict[str, int] = {}
SPANS: list[tuple[str, float | None, float | None]] = []
LOADED: dict[str, dict | None] = {}
PLANS: dict[str, list[str]] = {}  # job id -> what each attempt does: "ok", "transient", "permanent"
SETTLES: dict[str, datetime] = {}  # job id -> when its "in_doubt" attempts stop failing
HELD: dict[str, tuple[threading.Event, threading.Event]] = {}  # job id -> ("held" attempt started, let it end)


@pytest.fixture(scope="module")
def worker_broker(settings):
    """A broker with hostq's middleware and a scripted actor, and a running in-process worker."""
    lazy: dict = {}

    def sessions():  # made on the worker's own event loop thread, on first use
        if "s" not in lazy:
            lazy["s"] = make_sessionmaker(make_engine(settings.database_url, pool_size=2))
        return lazy["s"]

    def db():
        if "d" not in lazy:
            # One connection for two worker threads: attempts must not hold it while their work runs
            # (test_different_services_run_in_parallel).
            lazy["d"] = SystemPool(settings.database_url, max_size=1)
        return lazy["d"]

    def redis_client():
        if "r" not in lazy:
            lazy["r"] = PipelinedRedis(settings.redis_url)
        return lazy["r"]

    broker = setup_broker(replace(settings, namespace=f"{settings.namespace}-tracking", lock_ttl_s=5), sessions, db,
                          redis=redis_client)

    async def scripted(attempt: Attempt) -> dict:
        job_id = str(attempt.job_id)
        n = CALLS.get(job_id, 0)
        CALLS[job_id] = n + 1
        step = PLANS[job_id][min(n, len(PLANS[job_id]) - 1)]
        if step == "transient":
            raise TransientIntegrationError("whm_unavailable", f"attempt {n + 1}: WHM answered 503")
        if step == "slow":
            SPANS.append((job_id, time.monotonic(), None))
            await asyncio.sleep(0.3)
            SPANS.append((job_id, None, time.monotonic()))
            return {"done": n + 1}
        if step == "held":  # runs until the test lets it go (HELD[job_id] set)
            HELD.setdefault(job_id, (threading.Event(), threading.Event()))[0].set()
            while not HELD[job_id][1].is_set():
                await asyncio.sleep(0.01)
            return {"done": n + 1}
        if step == "permanent":
            raise PermanentIntegrationError("whm_rejected", "Unable to find package nope")
        if step == "in_doubt" and datetime.now(timezone.utc) < SETTLES[job_id]:  # a doubt until then, then ok
            raise TransientIntegrationError("whm_create_in_doubt", f"attempt {n + 1}: maybe still running",
                                            settles_at=SETTLES[job_id])
        if step == "bug":
            raise KeyError("a bug")
        return {"done": n + 1}

    job_actor(actor_name="test.scripted", queue_name="test", broker=broker)(scripted)

    async def loaded(attempt: Attempt) -> dict:
        # The resource here is another job row: what the start statement loaded, as the work sees it.
        LOADED[str(attempt.job_id)] = dict(attempt.row) if attempt.row is not None else None
        if PLANS.get(str(attempt.job_id)) == ["permanent"]:
            raise PermanentIntegrationError("whm_rejected", "no")
        return {"saw": attempt.row["kind"] if attempt.row is not None else None}

    job_actor(actor_name="test.loaded", queue_name="test", broker=broker,
              loads="SELECT id, kind, args FROM jobs WHERE id = $1",
              completes="UPDATE jobs SET args = '{\"completed\": true}' WHERE id = $1")(loaded)
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=2)
    worker.start()
    yield broker
    worker.stop()
    broker.close()


async def _run(sessions, broker, plan: list[str], max_attempts: int = 3, resource_id=None,
               kind: str = "test.scripted") -> Job:
    async with session_scope(sessions) as session:
        job = record_job(session, kind=kind, tenant_id=None, max_attempts=max_attempts,
                         resource_type="service" if resource_id else None, resource_id=resource_id)
    PLANS[str(job.id)] = plan
    assert dispatch(broker, [job]) == [(job.id, 1)]
    row = await _finished(sessions, job.id)
    assert row.status in ("succeeded", "failed"), f"job stuck in {row.status}"
    return row


async def _finished(sessions, job_id: uuid.UUID) -> Job:
    """The job's row once it succeeded or failed (or as it is after 6 s)."""
    for _ in range(300):
        async with sessions() as session:
            row = await session.get(Job, job_id)
        if row.status in ("succeeded", "failed"):
            break
        await asyncio.sleep(0.02)
    return row


async def _attempts(sessions, job_id: uuid.UUID) -> list[tuple[int, str, str | None]]:
    async with sessions() as session:
        rows = await session.scalars(select(JobAttempt).where(JobAttempt.job_id == job_id)
                                     .order_by(JobAttempt.attempt))
        return [(a.attempt, a.outcome, a.error_code) for a in rows]


async def test_transient_errors_retry_then_succeed(worker_broker, sessions):
    job = await _run(sessions, worker_broker, ["transient", "transient", "ok"])
    assert job.status == "succeeded" and job.attempts == 3
    assert job.result == {"done": 3} and job.error_code is None and job.finished_at is not None
    assert await _attempts(sessions, job.id) == [(1, "retrying", "whm_unavailable"),
                                                 (2, "retrying", "whm_unavailable"), (3, "succeeded", None)]


async def test_retries_end_failed_with_the_last_error(worker_broker, sessions):
    job = await _run(sessions, worker_broker, ["transient"], max_attempts=3)
    assert job.status == "failed" and job.attempts == 3
    assert job.error_code == "whm_unavailable" and "attempt 3" in job.error_message
    assert CALLS[str(job.id)] == 3  # Dramatiq did not retry past the job row's verdict
    await asyncio.sleep(0.5)
    assert CALLS[str(job.id)] == 3


async def test_a_doubt_that_outlasts_the_backoff_is_waited_out_by_the_last_attempt(worker_broker, sessions):
    """A createacct in doubt settles later than the backoff spends the attempts: the last one waits for it and
    decides, rather than failing the job with the same doubt (a terminate of a freshly failed service would)."""
    async with session_scope(sessions) as session:
        job = record_job(session, kind="test.scripted", tenant_id=None, max_attempts=3)
    settles = SETTLES[str(job.id)] = datetime.now(timezone.utc) + timedelta(seconds=1)
    PLANS[str(job.id)] = ["in_doubt"]
    assert dispatch(worker_broker, [job]) == [(job.id, 1)]
    noted = None
    for _ in range(500):
        async with sessions() as session:
            row = await session.get(Job, job.id)
        if row.status == "retrying" and row.attempts == 2 and row.next_attempt_at:
            noted = row.next_attempt_at
        if row.status in ("succeeded", "failed"):
            break
        await asyncio.sleep(0.02)
    # attempts 1 and 2 on the backoff (0.05-0.2 s), both in doubt; the third, the last, after the doubt settled
    assert await _attempts(sessions, job.id) == [(1, "retrying", "whm_create_in_doubt"),
                                                 (2, "retrying", "whm_create_in_doubt"), (3, "succeeded", None)]
    assert noted is not None and settles < noted < settles + timedelta(seconds=3), (noted, settles)
    async with sessions() as session:
        attempts = {a.attempt: a for a in await session.scalars(select(JobAttempt).where(JobAttempt.job_id == job.id))}
    assert attempts[2].started_at < settles < attempts[3].started_at


async def _lines_about(caplog, job_id: uuid.UUID, until: str) -> list[logging.LogRecord]:
    """The log records that name the job, once one of them contains `until` (the worker logs after the commit)."""
    for _ in range(100):
        about = [r for r in caplog.records if str(job_id) in r.getMessage()]
        if any(until in r.getMessage() for r in about):
            return about
        await asyncio.sleep(0.02)
    raise AssertionError(f"no line with {until!r}: {[r.getMessage() for r in about]}")


async def test_a_classified_failure_is_one_line_without_a_traceback(worker_broker, sessions, caplog):
    caplog.set_level(logging.INFO)
    job = await _run(sessions, worker_broker, ["transient", "permanent"], max_attempts=3)
    assert (job.status, job.attempts, job.error_code) == ("failed", 2, "whm_rejected")

    about = await _lines_about(caplog, job.id, "the job is failed")
    assert [r for r in about if r.exc_info] == []  # Dramatiq's "unhandled exception" and its traceback: dropped
    assert not any("unhandled exception" in r.getMessage() for r in about)
    ours = [(r.levelname, r.getMessage()) for r in about if r.name == "hostq.worker"]
    assert len(ours) == 2, ours
    assert ours[0][0] == "WARNING" and re.fullmatch(
        rf"job {job.id} \(test.scripted\): attempt 1 of 3 failed: whm_unavailable: attempt 1: WHM answered 503; "
        r"next attempt in \d+\.\d s, at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", ours[0][1]), ours[0]
    assert ours[1] == ("ERROR", f"job {job.id} (test.scripted): attempt 2 of 3 failed: whm_rejected: Unable to find "
                                "package nope; the job is failed (not retryable)")


async def test_an_unexpected_exception_keeps_its_traceback(worker_broker, sessions, caplog):
    caplog.set_level(logging.INFO)
    job = await _run(sessions, worker_broker, ["bug", "ok"], max_attempts=3)
    assert (job.status, job.attempts) == ("succeeded", 2)  # retried as before

    about = await _lines_about(caplog, job.id, "next attempt in")
    [traced] = [r for r in about if r.exc_info]
    assert "unhandled exception" in traced.getMessage() and isinstance(traced.exc_info[1], KeyError)
    assert any(r.name == "hostq.worker" and "attempt 1 of 3 failed: internal_error: unexpected KeyError" in
               r.getMessage() for r in about)


async def test_permanent_error_fails_at_once(worker_broker, sessions):
    job = await _run(sessions, worker_broker, ["permanent"], max_attempts=5)
    assert job.status == "failed" and job.attempts == 1 and job.error_code == "whm_rejected"
    assert CALLS[str(job.id)] == 1


async def test_a_finished_job_is_not_run_again(worker_broker, sessions):
    job = await _run(sessions, worker_broker, ["ok"])
    assert dispatch(worker_broker, [job]) == [(job.id, job.round)]  # a duplicate delivery (e.g. relay after a crash)
    await asyncio.sleep(0.5)
    assert CALLS[str(job.id)] == 1
    async with sessions() as session:
        assert (await session.get(Job, job.id)).attempts == 1


async def test_a_duplicate_message_of_a_retrying_job_waits_for_its_next_attempt(worker_broker, sessions, caplog):
    """A second message of a retrying job (sent again by a scheduler that found its broker's data lost, or on its
    first start on a new Redis) arrives long before the backoff ends: it is sent again for the due time, and the
    attempt starts then, once. Before, it started the attempt at once."""
    caplog.set_level(logging.INFO)
    due = datetime.now(timezone.utc) + timedelta(seconds=3.5)
    async with session_scope(sessions) as session:
        job = record_job(session, kind="test.scripted", tenant_id=None, max_attempts=3)
        job.status, job.attempts, job.next_attempt_at = "retrying", 1, due
    PLANS[str(job.id)] = ["ok"]
    worker_broker.enqueue(job_message(job))  # for now: the duplicate (the original waits in the delay queue)
    for _ in range(200):
        if any(f"job {job.id}: delivered" in r.getMessage() for r in caplog.records):
            break
        await asyncio.sleep(0.02)
    [line] = [r.getMessage() for r in caplog.records if f"job {job.id}: delivered" in r.getMessage()]
    assert re.fullmatch(rf"job {job.id}: delivered 3\.\d s before its next attempt is due \(a duplicate message\): "
                        r"sent again for then", line), line
    async with sessions() as session:
        row = await session.get(Job, job.id)
        assert (row.status, row.attempts, row.next_attempt_at) == ("retrying", 1, due)  # the backoff stands
    assert str(job.id) not in CALLS

    row = await _finished(sessions, job.id)
    assert (row.status, row.attempts, CALLS[str(job.id)]) == ("succeeded", 2, 1)
    assert row.started_at >= due - timedelta(milliseconds=100)  # not ahead of the backoff


async def test_one_action_at_a_time_per_service_and_waiting_costs_no_attempt(worker_broker, sessions):
    service_id = uuid.uuid4()
    jobs = await asyncio.gather(*[_run(sessions, worker_broker, ["slow"], resource_id=service_id) for _ in range(3)])
    assert [j.status for j in jobs] == ["succeeded"] * 3
    assert [j.attempts for j in jobs] == [1, 1, 1]  # waiting for the lock is not an attempt
    mine = {str(j.id) for j in jobs}
    starts = sorted(t for job, t, _ in SPANS if job in mine and t is not None)
    ends = sorted(t for job, _, t in SPANS if job in mine and t is not None)
    assert all(end <= next_start for end, next_start in zip(ends, starts[1:]))  # never overlapping


async def test_different_services_run_in_parallel(worker_broker, sessions):
    jobs = await asyncio.gather(*[_run(sessions, worker_broker, ["slow"], resource_id=uuid.uuid4())
                                  for _ in range(2)])
    assert [j.status for j in jobs] == ["succeeded"] * 2
    first, second = (str(j.id) for j in jobs)
    start = {job: t for job, t, _ in SPANS if t is not None}
    end = {job: t for job, _, t in SPANS if t is not None}
    assert start[first] < end[second] and start[second] < end[first]  # the two actions overlapped


async def _sent_back_refused(caplog, job_id: uuid.UUID) -> str:
    """The worker's line saying the job's message could not be sent back to the broker (written once the job is
    marked), or "" after 4 s."""
    said = f"job {job_id}: its message could not be sent back"
    for _ in range(200):
        if logged := [r.getMessage() for r in caplog.records if said in r.getMessage()]:
            return logged[0]
        await asyncio.sleep(0.02)
    return ""


async def test_a_busy_message_the_broker_refuses_to_take_back_goes_to_the_relay(worker_broker, sessions, caplog,
                                                                                monkeypatch):
    """Dramatiq acknowledges a message whatever its after-hook does: when sending a BUSY one back fails, the queued
    job is marked unsent, so the relay sends it again in seconds rather than the stalled sweep in minutes."""
    resource = uuid.uuid4()
    async with session_scope(sessions) as session:
        first, second = (record_job(session, kind="test.scripted", tenant_id=None, max_attempts=3,
                                    resource_type="service", resource_id=resource) for _ in range(2))
    PLANS[str(first.id)], PLANS[str(second.id)] = ["slow"], ["ok"]
    real_enqueue, refused = worker_broker.enqueue, []

    def enqueue(message, *, delay=None):
        if message.options.get("job_id") == str(second.id) and delay:  # the BUSY re-send, while Redis is away
            refused.append(message.message_id)
            raise ConnectionError("Redis went away")
        return real_enqueue(message, delay=delay)

    monkeypatch.setattr(worker_broker, "enqueue", enqueue)
    assert dispatch(worker_broker, [first]) == [(first.id, 1)]
    for _ in range(100):  # the first holds the service's lock
        if any(job == str(first.id) for job, _, _ in SPANS):
            break
        await asyncio.sleep(0.01)
    assert dispatch(worker_broker, [second]) == [(second.id, 1)]
    logged = await _sent_back_refused(caplog, second.id)
    assert refused and "the relay sends it again" in logged, (refused, logged)
    async with sessions() as session:
        row = await session.get(Job, second.id)
    assert (row.status, row.attempts, row.dispatched_at) == ("queued", 0, None), row

    monkeypatch.setattr(worker_broker, "enqueue", real_enqueue)  # the broker is back
    assert await relay_once(sessions, worker_broker, grace_s=0) >= 1
    row = await _finished(sessions, second.id)
    assert row.status == "succeeded" and row.attempts == 1, row


async def test_a_retry_the_broker_refuses_to_take_goes_to_the_relay(worker_broker, sessions, caplog, monkeypatch):
    """Retries' send of a failed attempt's retry raising (Redis away) is only logged by Dramatiq, which then
    acknowledges the message: the retrying job is marked unsent, and the relay sends it for its next attempt."""
    async with session_scope(sessions) as session:
        job = record_job(session, kind="test.scripted", tenant_id=None, max_attempts=3, resource_type="service",
                         resource_id=uuid.uuid4())
    PLANS[str(job.id)] = ["transient", "ok"]
    real_enqueue, refused = worker_broker.do_enqueue, []

    def do_enqueue(queue_name, message_id, data):  # past the middleware's before_enqueue, as Redis would fail
        message = dramatiq.Message.decode(data)
        if message.options.get("job_id") == str(job.id) and message.options.get("retries"):
            refused.append(message.message_id)
            raise ConnectionError("Redis went away")
        return real_enqueue(queue_name, message_id, data)

    monkeypatch.setattr(worker_broker, "do_enqueue", do_enqueue)
    assert dispatch(worker_broker, [job]) == [(job.id, 1)]
    logged = await _sent_back_refused(caplog, job.id)
    assert refused and "the relay sends it again" in logged, (refused, logged)
    async with sessions() as session:
        row = await session.get(Job, job.id)
    assert (row.status, row.attempts, row.dispatched_at) == ("retrying", 1, None), row
    due = row.next_attempt_at
    assert due is not None

    monkeypatch.setattr(worker_broker, "do_enqueue", real_enqueue)  # the broker is back
    assert await relay_once(sessions, worker_broker, grace_s=0) == 1
    row = await _finished(sessions, job.id)
    assert (row.status, row.attempts, CALLS[str(job.id)]) == ("succeeded", 2, 2), row
    async with sessions() as session:
        second = await session.scalar(select(JobAttempt.started_at).where(JobAttempt.job_id == job.id,
                                                                           JobAttempt.attempt == 2))
    assert second >= due - timedelta(milliseconds=100)  # sent for when it was due, not ahead of it


async def test_an_attempt_lost_with_its_worker_counts_and_ends_the_job_at_the_limit(sessions):
    async with session_scope(sessions) as session:
        job = record_job(session, kind="test.scripted", tenant_id=None, max_attempts=2)
    for _ in range(2):  # first delivery, then a redelivery after the worker died mid-attempt
        async with session_scope(sessions) as session:
            assert await tracking.start_attempt(session, job.id) is not None
    async with session_scope(sessions) as session:  # the second attempt dies too: no third
        assert await tracking.start_attempt(session, job.id) is None
    async with sessions() as session:
        row = await session.get(Job, job.id)
        assert (row.status, row.attempts, row.error_code) == ("failed", 2, "worker_lost")
    assert await _attempts(sessions, job.id) == [(1, "retrying", "worker_lost"), (2, "failed", "worker_lost")]


async def _resource_job(sessions) -> uuid.UUID:
    """A job row that stands in for a resource (it is never sent)."""
    async with session_scope(sessions) as session:
        return record_job(session, kind="test.resource", tenant_id=None, max_attempts=1, args={"n": 1}).id


async def test_the_start_loads_the_resource_and_the_success_completes_it(worker_broker, sessions):
    resource = await _resource_job(sessions)
    job = await _run(sessions, worker_broker, ["ok"], resource_id=resource, kind="test.loaded")
    assert job.status == "succeeded" and job.result == {"saw": "test.resource"}
    assert LOADED[str(job.id)] == {"hostq_round": 1, "hostq_attempt": 1, "id": resource, "kind": "test.resource", "args": {"n": 1}}
    async with sessions() as session:
        assert (await session.get(Job, resource)).args == {"completed": True}


async def test_a_failed_attempt_does_not_complete_the_resource(worker_broker, sessions):
    resource = await _resource_job(sessions)
    async with session_scope(sessions) as session:
        job = record_job(session, kind="test.loaded", tenant_id=None, max_attempts=1, resource_id=resource)
    PLANS[str(job.id)] = ["permanent"]
    assert dispatch(worker_broker, [job]) == [(job.id, job.round)]
    for _ in range(300):
        async with sessions() as session:
            if (await session.get(Job, job.id)).status == "failed":
                break
        await asyncio.sleep(0.02)
    async with sessions() as session:
        assert (await session.get(Job, job.id)).status == "failed"
        assert (await session.get(Job, resource)).args == {"n": 1}


async def test_a_missing_resource_loads_as_none(worker_broker, sessions):
    job = await _run(sessions, worker_broker, ["ok"], resource_id=uuid.uuid4(), kind="test.loaded")
    assert job.status == "succeeded" and job.result == {"saw": None}
    assert LOADED[str(job.id)] is None


def test_loaded_and_completing_statements_are_renumbered_after_the_jobs_own():
    start = tracking.start_sql("SELECT id FROM t WHERE id = $1 AND $1 IS NOT NULL")
    assert "WHERE id = $5 AND $5 IS NOT NULL" in start and "$1" in start
    finish = tracking.finish_sql("UPDATE t SET x = $2 WHERE id = $1")
    assert "UPDATE t SET x = $7 WHERE id = $6" in finish and "round = $4 AND attempts = $5" in finish


async def test_a_late_success_of_a_job_that_moved_on_has_no_effect(client, sessions, settings):
    """An attempt whose worker looked dead finishes after ops cancelled its create: the service stays as the
    cancel left it (failed), not activated by the job's success statement, which matched no running job."""
    from domain.jobs import ops
    from workers.pg import SystemPool
    from domain.provisioning.accounts import ACTIVATE
    from domain.services.models import Service
    from tests.integration.helpers import add_region, customer_and_plan, order_body
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    order = (await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()
    job_id, service_id = uuid.UUID(order["job"]["id"]), uuid.UUID(order["service"]["id"])
    async with session_scope(sessions) as session:
        await ops.cancel_jobs(session, [job_id])
        await session.execute(update(Service).where(Service.id == service_id).values(status="provisioning"))
    pool = SystemPool(settings.database_url, max_size=1)  # the workers' pool, as the attempt has it
    try:
        await tracking.finish_success(await pool.get(), tracking.Ticket(job_id, 1, 1), {"late": True},
                                      sql=tracking.finish_sql(ACTIVATE),
                                      resource_id=service_id)
    finally:
        await pool.close()
    async with sessions() as session:
        assert (await session.get(Job, job_id)).status == "cancelled"
        assert (await session.get(Service, service_id)).status == "provisioning"  # not made active


def _cut_the_first_success_of_each_job(monkeypatch) -> None:
    """The database drops the connection as each job's first success is recorded (a restart, a failover)."""
    real, cut = tracking.finish_success, set()

    async def connection_cut_once(db, ticket, result, **kwargs):
        if ticket.job_id not in cut:
            cut.add(ticket.job_id)
            raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")
        return await real(db, ticket, result, **kwargs)

    monkeypatch.setattr(tracking, "finish_success", connection_cut_once)


async def test_an_outcome_that_cannot_be_recorded_is_retried_not_lost(worker_broker, sessions, monkeypatch):
    """The database dropped the connection as the success was recorded (a restart, a failover): Dramatiq's retry
    brings the message back, the next attempt closes the unrecorded one as lost, and the job ends succeeded."""
    _cut_the_first_success_of_each_job(monkeypatch)
    job = await _run(sessions, worker_broker, ["ok"], max_attempts=3)
    assert (job.status, job.attempts, job.result) == ("succeeded", 2, {"done": 2}), job.error_message
    assert CALLS[str(job.id)] == 2  # the work ran again: for a create, the adopt rule finds the account
    assert await _attempts(sessions, job.id) == [(1, "retrying", "worker_lost"), (2, "succeeded", None)]


async def test_an_unrecorded_outcome_of_a_locked_service_is_retried_at_once(worker_broker, sessions, settings,
                                                                             monkeypatch):
    """As above, for a job holding its service's lock: its worker is alive and the attempt young, yet the next
    delivery must not wait for it as one still running: the worker said in Redis that it ended, for a delivery on
    any worker (this one also knows it runs it no more)."""
    _cut_the_first_success_of_each_job(monkeypatch)
    resource_id = uuid.uuid4()
    job = await _run(sessions, worker_broker, ["ok"], max_attempts=3, resource_id=resource_id)
    assert (job.status, job.attempts, job.result) == ("succeeded", 2, {"done": 2}), job.error_message
    assert await _attempts(sessions, job.id) == [(1, "retrying", "worker_lost"), (2, "succeeded", None)]
    redis = PipelinedRedis(settings.redis_url)
    try:
        ended = f"{settings.namespace}-tracking:lock:service:{resource_id}:ended:{job.id}:1:1"
        assert await redis.call("EXISTS", ended) == 1
    finally:
        await redis.aclose()


async def test_a_duplicate_delivered_while_the_lock_is_lost_waits_for_the_live_attempt(
        worker_broker, sessions, settings, caplog):
    """The service's lock vanished (its Redis key deleted) while its attempt runs on a live worker, and a duplicate
    message of the job arrives (the stalled sweep's): it must neither close the live attempt as lost nor run the
    work beside it; it comes back later and finds the job done."""
    resource_id = uuid.uuid4()
    async with session_scope(sessions) as session:
        job = record_job(session, kind="test.scripted", tenant_id=None, max_attempts=3, resource_type="service",
                         resource_id=resource_id)
    job_id = str(job.id)
    PLANS[job_id], HELD[job_id] = ["held", "ok"], (threading.Event(), threading.Event())
    assert dispatch(worker_broker, [job]) == [(job.id, 1)]
    assert await asyncio.to_thread(HELD[job_id][0].wait, 5)
    redis = PipelinedRedis(settings.redis_url)
    try:
        assert await redis.call("DEL", f"{settings.namespace}-tracking:lock:service:{resource_id}") == 1
        assert dispatch(worker_broker, [job]) == [(job.id, 1)]  # the duplicate
        for _ in range(100):  # until the duplicate was delivered and sent back for later
            if await redis.call("LLEN", f"{worker_broker.namespace}:test") == 0:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        assert await _attempts(sessions, job.id) == [(1, None, None)]  # still the one attempt, open
        # (found running, not merely the lock retaken by the live attempt's keeper in the meantime)
        assert f"job {job_id}: delivered while its attempt still runs on worker" in caplog.text
        HELD[job_id][1].set()
        row = await _finished(sessions, job.id)
        assert (row.status, row.attempts, row.result) == ("succeeded", 1, {"done": 1})
        await asyncio.sleep(2.5)  # the duplicate's return (BUSY_DELAY_MS) finds the job done
        assert CALLS[job_id] == 1
        assert await _attempts(sessions, job.id) == [(1, "succeeded", None)]
    finally:
        HELD[job_id][1].set()
        await redis.aclose()


async def test_whether_an_open_attempt_still_runs(settings):
    """What a delivery finding its job `running` asks before closing the attempt as lost: another worker's attempt
    runs while that worker beats, within the time limit, unless it said it ended; this process knows its own."""
    middleware = JobStateMiddleware(None, None, longest_attempt_s=60)
    namespace = f"{settings.namespace}-still-running"
    holder = Holder("this-worker", f"{namespace}:heartbeats", 10_000)
    redis = PipelinedRedis(settings.redis_url)
    lock = RedisLock(redis, f"{namespace}:lock:service:{uuid.uuid4()}", 5000, holder.owner)
    check = middleware._still_running(holder, lock)
    ticket, other = tracking.Ticket(uuid.uuid4(), 1, 1), tracking.Ticket(uuid.uuid4(), 1, 2)
    now = datetime.now(timezone.utc)
    try:
        await redis.call("ZADD", holder.heartbeats_key, int(time.time() * 1000), "beating",
                         int(time.time() * 1000) - 20_000, "stale")
        assert await check("beating", now, ticket)
        assert not await check("stale", now, ticket)  # its worker died
        assert not await check("beating", now - timedelta(seconds=121), ticket)  # past its limit and 60 s more
        assert not await check("unknown", now, ticket)
        await _say_ended(lock, ticket, middleware._longest_attempt)  # its outcome was lost as it ended
        assert not await check("beating", now, ticket)
        assert await check("beating", now, other)
        # this process's own attempts: live only while it runs them (not one whose start failed halfway)
        assert not await check(holder.owner, now, other)
        middleware._live.add(other)
        assert await check(holder.owner, now, other)
    finally:
        await redis.call("DEL", holder.heartbeats_key, f"{lock.key}:ended:{ticket.job_id}:1:1")
        await redis.aclose()


async def test_an_unrecorded_outcome_on_a_later_delivery_is_retried_too(worker_broker, sessions, monkeypatch):
    """The first attempt failed and was recorded (its message came back with Dramatiq's retry count raised to
    let exactly one more delivery through); the second's outcome cannot be recorded. Its message must come back
    again, not be dropped as out of retries with the job left `running` until the stalled-job sweep."""
    _cut_the_first_success_of_each_job(monkeypatch)
    job = await _run(sessions, worker_broker, ["transient", "ok"], max_attempts=4)
    assert (job.status, job.attempts) == ("succeeded", 3), job.error_message
    assert await _attempts(sessions, job.id) == [(1, "retrying", "whm_unavailable"), (2, "retrying", "worker_lost"),
                                                 (3, "succeeded", None)]
