"""An attempt's outcome is recorded whole and only by the attempt whose turn it is.

A service action's change to its service commits in the statement that records its job's success, never
before it; and an attempt that outlived its turn (its worker only looked dead, so the job was started again
elsewhere) records neither success nor failure: the attempt that took over owns the job and its service.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone

import pytest
from sqlalchemy import select, update

from domain.db import session_scope
from domain.jobs import tracking
from domain.pg import connect
from domain.errors import OutOfTurn, TransientIntegrationError
from domain.jobs.models import Job, JobAttempt
from domain.provisioning import accounts
from domain.provisioning.actions import run_action
from domain.services.models import Service
from tests.integration.helpers import add_region, customer_and_plan, order_body
from workers.pg import SystemPool


class FakeWhm:
    """A WHM server holding one account (the WhmPort an action uses), recording the calls that change it."""

    def __init__(self, user: str, domain: str) -> None:
        self.account = {"user": user, "domain": domain, "plan": "basic", "suspended": 0}
        self.calls: list[str] = []

    async def accountsummary(self, *, user=None, domain=None):
        return dict(self.account) if user == self.account["user"] else None

    async def suspendacct(self, user: str, reason: str) -> None:
        self.calls.append("suspendacct")
        self.account["suspended"] = 1

    async def changepackage(self, user: str, package: str) -> None:
        self.calls.append("changepackage")
        self.account["plan"] = package


@pytest.fixture
async def pool(settings):
    pool = SystemPool(settings.database_url, max_size=1)  # the workers' pool, as an attempt has it
    yield await pool.get()
    await pool.close()


async def _active_service(client, sessions, settings) -> tuple[str, FakeWhm]:
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    order = (await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()
    username = f"u{uuid.uuid4().hex[:7]}"
    async with session_scope(sessions) as session:
        await session.execute(update(Service).where(Service.id == uuid.UUID(order["service"]["id"]))
                              .values(status="active", username=username))
        await session.execute(update(Job).where(Job.id == uuid.UUID(order["job"]["id"])).values(
            status="succeeded", finished_at=datetime.now(timezone.utc)))
    return order["service"]["id"], FakeWhm(username, order["service"]["domain"])


async def _ordered(client, sessions, settings) -> tuple[uuid.UUID, uuid.UUID]:
    """An order in a region of its own: its create job's id and its service's."""
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    order = (await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()
    return uuid.UUID(order["job"]["id"]), uuid.UUID(order["service"]["id"])


async def _start(pool, job_id: uuid.UUID, sql: str | None = None, resource_id=None):
    row = await tracking.start_fresh(pool, job_id, sql=sql, resource_id=resource_id)
    return tracking.Ticket(job_id, row["hostq_round"], row["hostq_attempt"])


async def _started_again(sessions, job_id: uuid.UUID) -> tracking.Ticket:
    """The job's message redelivered to another worker while this attempt still runs (its lock taken over)."""
    async with session_scope(sessions) as session:
        job = await tracking.start_attempt(session, job_id)
        return tracking.Ticket(job_id, job.round, job.attempts)


async def _service(sessions, service_id: str) -> Service:
    async with sessions() as session:
        return await session.get(Service, uuid.UUID(service_id))


async def _job(sessions, job_id: uuid.UUID) -> Job:
    async with sessions() as session:
        return await session.get(Job, job_id)


async def _finish(pool, ticket: tracking.Ticket, outcome: tracking.Outcome, service_id: str) -> None:
    await tracking.finish_success(pool, ticket, outcome.result, sql=tracking.finish_sql(outcome.completes),
                                  resource_id=uuid.UUID(service_id), args=outcome.args)


@pytest.mark.parametrize("action", ["suspend", "change-plan"])
async def test_an_actions_change_to_its_service_commits_with_the_jobs_success_and_only_with_it(
        action, client, sessions, settings, pool):
    service_id, whm = await _active_service(client, sessions, settings)
    body = None
    if action == "change-plan":
        body = {"plan": f"p{uuid.uuid4().hex[:6]}"}
        assert (await client.post("/v1/plans", json={"code": body["plan"], "name": "Pro", "whm_package": "pro",
                                                     "prices": {"monthly": 9990}})).status_code == 201
    job_id = uuid.UUID((await client.post(f"/v1/services/{service_id}/{action}", json=body)).json()["job"]["id"])
    before = await _service(sessions, service_id)

    first = await _start(pool, job_id)
    outcome = await run_action(sessions, job_id, lambda server: whm,
                                   create_settles_s=settings.create_settles_s)
    assert whm.calls == ["suspendacct" if action == "suspend" else "changepackage"]
    # WHM changed, the service not yet: a failure to record the success now leaves the job to be retried
    # (the retry asks WHM first), never a service changed under a job that ends failed.
    assert isinstance(outcome, tracking.Outcome)
    assert (await _service(sessions, service_id)).status == "active"

    second = await _started_again(sessions, job_id)
    await _finish(pool, first, outcome, service_id)  # the first attempt outlived its turn
    service = await _service(sessions, service_id)
    assert (service.status, service.plan_code) == ("active", before.plan_code)
    assert (await _job(sessions, job_id)).status == "running"

    await _finish(pool, second, await run_action(sessions, job_id, lambda server: whm,
                                   create_settles_s=settings.create_settles_s), service_id)
    service, job = await _service(sessions, service_id), await _job(sessions, job_id)
    assert whm.calls == ["suspendacct" if action == "suspend" else "changepackage"]  # asked WHM first: once
    if action == "suspend":
        assert (service.status, service.suspended_reason) == ("suspended", "reseller")
    else:
        assert (service.status, service.plan_code) == ("active", body["plan"])
    assert (job.status, job.attempts, job.result["service_id"]) == ("succeeded", 2, service_id)


async def test_an_attempt_that_outlived_its_turn_records_no_failure(client, sessions, settings, pool):
    service_id, _ = await _active_service(client, sessions, settings)
    job_id = uuid.UUID((await client.post(f"/v1/services/{service_id}/suspend")).json()["job"]["id"])
    first = await _start(pool, job_id)
    second = await _started_again(sessions, job_id)
    error = tracking.JobError("whm_unavailable", "WHM answered 503", retryable=False)

    async with session_scope(sessions) as session:
        assert await tracking.finish_error(session, first, error) is None
    job = await _job(sessions, job_id)
    assert (job.status, job.attempts, job.error_code) == ("running", 2, None)

    async with session_scope(sessions) as session:
        recorded = await tracking.finish_error(session, second, error)
    assert (recorded.status, recorded.attempt) == ("failed", 2)
    async with sessions() as session:
        attempts = (await session.scalars(select(JobAttempt).where(JobAttempt.job_id == job_id)
                                          .order_by(JobAttempt.attempt))).all()
    assert [(a.attempt, a.outcome, a.error_code) for a in attempts] == [
        (1, "retrying", "worker_lost"), (2, "failed", "whm_unavailable")]


class SilentVerify:
    """A WHM whose verify_new_username does not answer; with `take_over`, the job is started again elsewhere
    while it waits (this attempt's lock taken over)."""

    def __init__(self, take_over=None) -> None:
        self.take_over = take_over

    async def verify_new_username(self, user: str) -> bool:
        if self.take_over is not None:
            await self.take_over()
        raise TransientIntegrationError("whm_timeout", "WHM did not answer verify_new_username")


@pytest.mark.parametrize("taken_over", [False, True])
async def test_a_username_is_given_back_only_by_the_attempt_whose_turn_it_is(
        taken_over, client, sessions, settings, pool):
    """WHM did not answer verify_new_username, so nothing went out under the name: the attempt gives it back, for
    a retry to choose again. Not once its turn is over: the attempt that took over may be creating the account
    under that name already."""
    job_id, service_id = await _ordered(client, sessions, settings)
    ticket = await _start(pool, job_id)
    whm = SilentVerify((lambda: _started_again(sessions, job_id)) if taken_over else None)
    with pytest.raises(TransientIntegrationError):
        await accounts.create_account(pool, await pool.fetchrow(accounts.LOAD_SERVICE, service_id),
                                      lambda server: whm, ticket)
    service = await _service(sessions, str(service_id))
    if taken_over:
        assert service.username is not None and service.create_attempted_at is not None
    else:
        assert service.username is None and service.create_attempted_at is None


async def _waiting_for_a_lock(settings, query: str) -> None:
    watcher = await connect(settings.database_url)  # the database's owner: sees every session's query
    try:
        await _poll_waiting(watcher, query)
    finally:
        await watcher.close()


async def _poll_waiting(watcher, query: str) -> None:
    for _ in range(200):
        if await watcher.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                               "AND query = $1", query):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the statement never waited")


async def test_a_give_back_that_waited_for_its_row_is_not_applied_under_an_attempt_that_started_meanwhile(
        client, sessions, settings, pool):
    """The give-back waits for the service's row (another transaction holds it) while the job is started again
    elsewhere: either the new attempt starts first and nothing is given back, or it waits and loads what was given
    back; never does it load a name that is then taken from under it."""
    job_id, service_id = await _ordered(client, sessions, settings)
    first = await _start(pool, job_id)
    username = f"u{uuid.uuid4().hex[:7]}"
    await pool.execute("UPDATE services SET username = $2, create_attempted_at = now() WHERE id = $1",
                       service_id, username)
    others = SystemPool(settings.database_url, max_size=3)
    db = await others.get()
    try:
        async with db.acquire() as holder, holder.transaction():
            await holder.execute("SELECT FROM services WHERE id = $1 FOR UPDATE", service_id)
            give_back = asyncio.create_task(db.execute(accounts._GIVE_BACK, service_id, username,
                                                       *tracking.turn_args(first)))
            await _waiting_for_a_lock(settings, accounts._GIVE_BACK)

            async def takes_over() -> str | None:
                await _started_again(sessions, job_id)
                return await db.fetchval("SELECT username FROM services WHERE id = $1", service_id)
            second = asyncio.create_task(takes_over())
            await asyncio.sleep(0.3)
        seen_by_second = await second
        await give_back
    finally:
        await others.close()
    assert (await _service(sessions, str(service_id))).username == seen_by_second


async def test_a_late_note_of_when_the_next_attempt_is_due_leaves_a_later_attempts_alone(
        client, sessions, settings, pool):
    service_id, _ = await _active_service(client, sessions, settings)
    job_id = uuid.UUID((await client.post(f"/v1/services/{service_id}/suspend")).json()["job"]["id"])
    error = tracking.JobError("whm_unavailable", "WHM answered 503", retryable=True)
    failed = []
    for _ in range(2):
        ticket = await _started_again(sessions, job_id)
        async with session_scope(sessions) as session:
            failed.append(await tracking.finish_error(session, ticket, error))
    await tracking.note_next_attempt(pool, job_id, failed[1], 60_000)
    noted = (await _job(sessions, job_id)).next_attempt_at
    await tracking.note_next_attempt(pool, job_id, failed[0], 1)  # the first attempt's note, late
    assert (await _job(sessions, job_id)).next_attempt_at == noted and noted is not None


async def test_an_attempt_that_outlived_its_turn_does_not_call_whm_to_change_the_account(
        client, sessions, settings, pool):
    """It read WHM, then paused (its worker looked dead, the job was started again elsewhere): when it resumes, the
    check just before suspendacct stops it; the attempt that took over makes the call."""
    service_id, whm = await _active_service(client, sessions, settings)
    job_id = uuid.UUID((await client.post(f"/v1/services/{service_id}/suspend")).json()["job"]["id"])
    first = await _start(pool, job_id)
    second = await _started_again(sessions, job_id)
    with pytest.raises(OutOfTurn):
        await run_action(sessions, job_id, lambda server: whm, create_settles_s=settings.create_settles_s,
                         turn_check=lambda: tracking.ensure_turn(pool, first))
    assert whm.calls == []
    outcome = await run_action(sessions, job_id, lambda server: whm, create_settles_s=settings.create_settles_s,
                               turn_check=lambda: tracking.ensure_turn(pool, second))
    assert whm.calls == ["suspendacct"] and outcome.result["outcome"] == "suspended"


class CreatingWhm:
    """A WHM with no account yet, recording createacct."""

    def __init__(self, take_over=None) -> None:
        self.take_over, self.created = take_over, []

    async def verify_new_username(self, user: str) -> bool:
        if self.take_over is not None:  # the job is started again elsewhere while this attempt waits here
            await self.take_over()
        return True

    async def username_refusal(self, user: str) -> str | None:
        return None if await self.verify_new_username(user) else "taken"

    async def accountsummary(self, *, user=None, domain=None):
        return None

    async def createacct(self, *, username: str, domain: str, **_) -> dict:
        self.created.append(username)
        return {}


@pytest.mark.parametrize("username", [None, "kept1234"])
async def test_an_attempt_taken_over_before_its_first_write_leaves_the_service_alone(username, client, sessions,
                                                                                     settings, pool):
    """The worker paused right after its attempt started (its start statement had loaded the service); meanwhile
    the job started again elsewhere and settled the service. Resumed, the stale attempt must store neither a name
    (which would hold a place on the server for a service that has no account) nor a createacct mark (which
    would make a terminate wait for a createacct never sent)."""
    job_id, service_id = await _ordered(client, sessions, settings)
    if username:  # the reseller's own: the attempt only marks that a createacct may go out
        async with session_scope(sessions) as session:
            await session.execute(update(Service).where(Service.id == service_id).values(username=username))
    ticket = await _start(pool, job_id)
    row = await pool.fetchrow(accounts.LOAD_SERVICE, service_id)
    await _started_again(sessions, job_id)
    whm = CreatingWhm()
    with pytest.raises(OutOfTurn):
        await accounts.create_account(pool, row, lambda server: whm, ticket)
    service = await _service(sessions, str(service_id))
    assert (service.username, service.create_attempted_at, whm.created) == (username, None, [])


@pytest.mark.parametrize("taken_over", [False, True])
async def test_a_create_that_outlived_its_turn_sends_no_createacct(taken_over, client, sessions, settings, pool):
    job_id, service_id = await _ordered(client, sessions, settings)
    ticket = await _start(pool, job_id)
    whm = CreatingWhm((lambda: _started_again(sessions, job_id)) if taken_over else None)
    row = await pool.fetchrow(accounts.LOAD_SERVICE, service_id)
    if taken_over:
        with pytest.raises(OutOfTurn):
            await accounts.create_account(pool, row, lambda server: whm, ticket)
        assert whm.created == []
    else:
        assert (await accounts.create_account(pool, row, lambda server: whm, ticket))["outcome"] == "created"
        assert len(whm.created) == 1
