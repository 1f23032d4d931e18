"""Ops on jobs (list, retry, cancel) and `hostq jobs`, against real Postgres and Redis."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from dataclasses import replace
from datetime import datetime, timezone

import msgspec
import pytest
from sqlalchemy import select, text, update

from api.jobs.schemas import Job as ApiJob
from domain.db import make_engine, make_sessionmaker, session_scope
from domain.errors import NotFound, ValidationFailed
from domain.jobs import ops, rules, tracking
from domain.jobs.models import Job, JobAttempt
from domain.jobs.service import mark_dispatched, record_job, take_outbox, undispatched_jobs
from domain.provisioning.models import WhmServer
from domain.services.models import Service
from hostq import jobs_cli
from tests.integration.helpers import add_region, customer_and_plan, order_body
from tests.integration.test_job_tracking import PLANS, worker_broker  # noqa: F401  (a real worker)
from workers.dispatch import dispatch


def _kind() -> str:
    """A job kind of its own for one test (the database is shared by the run); its queue is `test`."""
    return f"test.k{uuid.uuid4().hex[:8]}"


def _add_job(session, kind: str, status: str = "queued", *, attempts: int = 0, tenant_id=None) -> Job:
    """A job in `status` as a worker would have left it, with one JobAttempt row per attempt."""
    job = record_job(session, kind=kind, tenant_id=tenant_id, max_attempts=3)
    take_outbox(session)  # these jobs are not sent: the tests say what reaches the broker
    now = datetime.now(timezone.utc)
    job.status, job.attempts = status, attempts
    if status != "queued":
        job.started_at, job.dispatched_at = now, now
    if status == "failed":
        job.error_code, job.error_message, job.finished_at = "whm_unavailable", "WHM answered 503", now
    for n in range(1, attempts + 1):
        last = n == attempts and status != "running"
        session.add(JobAttempt(job_id=job.id, round=1, attempt=n, started_at=now, finished_at=now,
                               outcome=status if last else "retrying", error_code="whm_unavailable"))
    return job


async def _jobs(sessions, *specs) -> list[uuid.UUID]:
    async with session_scope(sessions) as session:
        jobs = [_add_job(session, *spec[:2], attempts=spec[2] if len(spec) > 2 else 0) for spec in specs]
    return [job.id for job in jobs]


async def _row(sessions, job_id) -> Job:
    async with sessions() as session:
        return await session.get(Job, uuid.UUID(str(job_id)))


async def _history(sessions, job_id) -> list[tuple[int, int, str | None]]:
    async with sessions() as session:
        rows = await session.scalars(select(JobAttempt).where(JobAttempt.job_id == job_id)
                                     .order_by(JobAttempt.round, JobAttempt.attempt))
        return [(a.round, a.attempt, a.outcome) for a in rows]


async def test_retry_puts_the_same_job_back_for_a_fresh_round_and_sends_it(sessions, settings, resources):
    [job_id] = await _jobs(sessions, (_kind(), "failed", 3))
    queue = f"{settings.namespace}:dramatiq:test"
    before = await resources.redis.llen(queue)

    outcome = await jobs_cli.retry(settings, ids=[str(job_id)])

    assert outcome == {"retried": [str(job_id)], "skipped": []}
    job = await _row(sessions, job_id)
    assert (job.status, job.round, job.attempts) == ("queued", 2, 0)
    assert job.started_at is job.finished_at is job.next_attempt_at is None
    assert job.error_code == "whm_unavailable"  # the last error stays visible until the next attempt
    assert job.dispatched_at is not None and await resources.redis.llen(queue) == before + 1
    assert await _history(sessions, job_id) == [(1, 1, "retrying"), (1, 2, "retrying"), (1, 3, "failed")]


async def test_retry_while_the_broker_is_down_leaves_the_job_for_the_relay(sessions, settings):
    [job_id] = await _jobs(sessions, (_kind(), "failed", 3))
    down = replace(settings, broker_url="redis://127.0.0.1:1/0")
    assert (await jobs_cli.retry(down, ids=[str(job_id)]))["retried"] == [str(job_id)]
    job = await _row(sessions, job_id)
    assert (job.status, job.dispatched_at) == ("queued", None)
    async with session_scope(sessions) as session:  # what the relay looks for
        assert job_id in [j.id for j in await undispatched_jobs(session, grace_s=0, limit=10_000)]


async def test_only_failed_jobs_are_retried_the_rest_are_skipped_with_a_reason(sessions):
    kind = _kind()
    failed, done, queued, running, cancelled = await _jobs(
        sessions, (kind, "failed", 1), (kind, "succeeded", 1), (kind, "queued"), (kind, "running", 1),
        (kind, "cancelled"))
    unknown = uuid.uuid4()
    async with session_scope(sessions) as session:
        outcome = await ops.retry_jobs(session, [done, "nope", failed, str(failed), queued, running, cancelled,
                                                 unknown])
        assert [job.id for job in session.info["hostq_outbox"]] == [failed]  # sent after commit
    assert outcome == {"retried": [str(failed)], "skipped": [
        {"id": "nope", "reason": "not a job id"},
        {"id": str(done), "reason": "status is succeeded"},
        {"id": str(queued), "reason": "status is queued"},
        {"id": str(running), "reason": "status is running"},
        {"id": str(cancelled), "reason": "status is cancelled"},
        {"id": str(unknown), "reason": "no such job"}]}
    assert (await _row(sessions, done)).status == "succeeded" and (await _row(sessions, running)).attempts == 1


async def test_retry_by_status_and_kind_retries_only_that_kind(sessions):
    kind, other = _kind(), _kind()
    first, second, done, elsewhere = await _jobs(sessions, (kind, "failed", 3), (kind, "failed", 3),
                                                 (kind, "succeeded", 1), (other, "failed", 3))
    async with session_scope(sessions) as session:
        outcome = await ops.retry_matching(session, status="failed", kind=kind)
    assert sorted(outcome["retried"]) == sorted([str(first), str(second)]) and outcome["skipped"] == []
    assert [(await _row(sessions, i)).status for i in (first, second, done, elsewhere)] == [
        "queued", "queued", "succeeded", "failed"]
    async with session_scope(sessions) as session:
        with pytest.raises(ValidationFailed):
            await ops.retry_matching(session, status="succeeded", kind=kind)


async def test_a_bulk_retry_goes_in_batches_each_committed_and_sent(sessions, settings, monkeypatch):
    """`hostq jobs retry --status failed --kind K` over many jobs: a transaction per batch (so the rows it locks,
    a server's counter among them, are held only that long), each batch sent once it commits, and a job a batch
    skips is passed over, not examined again or stopping the rest."""
    from domain.jobs import effects
    kind = _kind()
    ids = sorted(await _jobs(sessions, *[(kind, "failed", 3)] * 7))
    refused = ids[2]  # the last of the first batch: the next batch must begin after it
    real_refusal, real_matching, batches = effects.requeue_refusal, ops.retry_matching, []

    async def refusal(session, job):
        return "refused by the test" if job.id == refused else await real_refusal(session, job)

    async def matching(session, **kwargs):
        outcome = await real_matching(session, **kwargs)
        batches.append(len(outcome["retried"]) + len(outcome["skipped"]))
        return outcome

    monkeypatch.setattr(effects, "requeue_refusal", refusal)
    monkeypatch.setattr(ops, "retry_matching", matching)
    monkeypatch.setattr(jobs_cli, "BATCH", 3)
    outcome = await jobs_cli.retry(settings, kind=kind)

    assert batches == [3, 3, 1]
    assert sorted(outcome["retried"]) == [str(i) for i in ids if i != refused]
    assert outcome["skipped"] == [{"id": str(refused), "reason": "refused by the test"}]
    for job_id in ids:
        job = await _row(sessions, job_id)
        if job_id == refused:
            assert (job.status, job.round) == ("failed", 1)
        else:
            assert (job.status, job.round) == ("queued", 2) and job.dispatched_at is not None, job_id


async def test_a_retry_of_many_ids_goes_in_batches_once_each(sessions, settings, monkeypatch):
    kind = _kind()
    ids = [str(i) for i in await _jobs(sessions, *[(kind, "failed", 3)] * 5)]
    real, batches = ops.retry_jobs, []

    async def retry_jobs(session, job_ids, **options):
        batches.append(list(job_ids))
        return await real(session, job_ids, **options)

    monkeypatch.setattr(ops, "retry_jobs", retry_jobs)
    monkeypatch.setattr(jobs_cli, "BATCH", 2)
    outcome = await jobs_cli.retry(settings, ids=[*ids, ids[0]])  # one named twice
    assert batches == [ids[:2], ids[2:4], ids[4:]]
    assert outcome == {"retried": ids, "skipped": []}


async def test_adopt_takes_only_a_create_that_found_an_account_made_outside_hostq(sessions, settings):
    """`--adopt` marks a service's account as its own: never on a job that failed for another reason."""
    kind = _kind()
    [other] = [str(i) for i in await _jobs(sessions, (kind, "failed", 3))]
    outcome = await jobs_cli.retry(settings, ids=[other], adopt=True)
    assert outcome["retried"] == [] and "--adopt takes a provision.create that failed whm_account_made_outside" in \
        outcome["skipped"][0]["reason"], outcome
    assert (await jobs_cli.retry(settings, ids=[other]))["retried"] == [other]  # as a plain retry it goes


async def test_a_cancel_of_many_ids_goes_in_batches_each_committed(sessions, settings, monkeypatch):
    kind = _kind()
    ids = [str(i) for i in await _jobs(sessions, *[(kind, "queued")] * 3, (kind, "running", 1))]
    real, batches = ops.cancel_jobs, []

    async def cancel_jobs(session, job_ids, *, force):
        batches.append(list(job_ids))
        if len(batches) == 2:  # the first batch is committed already, by another transaction
            async with sessions() as other:
                assert (await other.get(Job, uuid.UUID(ids[0]))).status == "cancelled"
        return await real(session, job_ids, force=force)

    monkeypatch.setattr(ops, "cancel_jobs", cancel_jobs)
    monkeypatch.setattr(jobs_cli, "BATCH", 2)
    outcome = await jobs_cli.cancel(settings, ids=[*ids, ids[1], "x"])  # one named twice, one not an id
    assert batches == [ids[:2], ids[2:], ["x"]]
    assert outcome == {"cancelled": ids[:3], "skipped": [{"id": ids[3], "reason": "status is running"},
                                                         {"id": "x", "reason": "not a job id"}]}
    assert [(await _row(sessions, uuid.UUID(i))).status for i in ids] == ["cancelled"] * 3 + ["running"]


async def test_cancel_stops_waiting_jobs_but_never_a_running_one(sessions):
    kind = _kind()
    queued, retrying, failed, running, done = await _jobs(
        sessions, (kind, "queued"), (kind, "retrying", 1), (kind, "failed", 3), (kind, "running", 1),
        (kind, "succeeded", 1))
    async with session_scope(sessions) as session:
        outcome = await ops.cancel_jobs(session, [queued, retrying, failed, running, done, "x"])
    assert outcome == {"cancelled": [str(queued), str(retrying), str(failed)], "skipped": [
        {"id": "x", "reason": "not a job id"}, {"id": str(running), "reason": "status is running"},
        {"id": str(done), "reason": "status is succeeded"}]}
    for job_id in (queued, retrying, failed):
        job = await _row(sessions, job_id)
        assert job.status == "cancelled" and job.finished_at is not None
    assert (await _row(sessions, running)).status == "running"
    # The cancelled job's message, when a worker receives it, does not start an attempt.
    async with session_scope(sessions) as session:
        assert await tracking.start_attempt(session, queued) is None
    assert await _history(sessions, queued) == []
    async with session_scope(sessions) as session:
        again = await ops.cancel_jobs(session, [queued])
    assert again == {"cancelled": [], "skipped": [{"id": str(queued), "reason": "status is cancelled"}]}


async def test_list_filters_by_status_kind_and_tenant_newest_first(sessions, settings, tenant):
    kind = _kind()
    old, done, new = await _jobs(sessions, (kind, "failed", 3), (kind, "succeeded", 1), (kind, "failed", 3))
    async with session_scope(sessions) as session:
        owned = _add_job(session, kind, "failed", attempts=3, tenant_id=tenant["tenant_id"]).id
    async with sessions() as session:
        page, cursor = await ops.list_jobs(session, status="failed", kind=kind, limit=2)
        assert [j.id for j in page] == [owned, new] and cursor
        page, cursor = await ops.list_jobs(session, status="failed", kind=kind, limit=2, cursor=cursor)
        assert [j.id for j in page] == [old] and cursor is None
        assert [j.id for j in (await ops.list_jobs(session, kind=kind))[0]] == [owned, new, done, old]
        assert [j.id for j in (await ops.list_jobs(session, tenant_id=tenant["tenant_id"]))[0]] == [owned]
        with pytest.raises(ValidationFailed):
            await ops.list_jobs(session, status="stuck")

    lines, more = await jobs_cli.list_page(settings, kind=kind, tenant=tenant["slug"])
    assert not more
    assert lines == [{"id": str(owned), "kind": kind, "status": "failed", "attempts": 3, "max_attempts": 3,
                      "round": 1, "tenant_id": str(tenant["tenant_id"]), "resource": None,
                      "error": {"code": "whm_unavailable", "message": "WHM answered 503"}, "result": None,
                      "created_at": lines[0]["created_at"], "started_at": lines[0]["started_at"],
                      "finished_at": lines[0]["finished_at"], "next_attempt_at": None, "request_id": None}]
    for field in ("created_at", "started_at", "finished_at"):
        assert datetime.fromisoformat(lines[0][field])
    three, more = await jobs_cli.list_page(settings, kind=kind, limit=3)
    assert len(three) == 3 and more  # four match
    assert (await jobs_cli.list_page(settings, kind=kind, limit=4))[1] is False


async def test_cli_times_are_rfc_3339_utc_with_z_as_the_api_writes_them(sessions, settings):
    kind = _kind()
    [job_id] = await _jobs(sessions, (kind, "failed", 1))
    [line], _ = await jobs_cli.list_page(settings, kind=kind)
    api_json = msgspec.json.decode(msgspec.json.encode(ApiJob.of(await _row(sessions, job_id))))
    assert (line["created_at"], line["finished_at"]) == (api_json["created_at"], api_json["finished_at"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", line["created_at"]), line


async def test_retry_of_a_failed_provisioning_job_puts_its_service_back_to_provisioning(
        client, sessions, settings, resources):
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    body = (await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()
    job_id, service_id = uuid.UUID(body["job"]["id"]), uuid.UUID(body["service"]["id"])
    async with session_scope(sessions) as session:  # as the worker leaves them when the job gives up
        await session.execute(update(Job).where(Job.id == job_id).values(
            status="failed", attempts=3, error_code="whm_unavailable", error_message="503",
            finished_at=datetime.now(timezone.utc)))
        await session.execute(update(Service).where(Service.id == service_id).values(status="failed"))
    queue = f"{settings.namespace}:dramatiq:provisioning.{region}"
    before = await resources.redis.llen(queue)

    assert (await jobs_cli.retry(settings, ids=[str(job_id)]))["retried"] == [str(job_id)]

    async with sessions() as session:
        service = await session.get(Service, service_id)
    assert service.status == "provisioning" and service.last_job_id == job_id
    assert (await _row(sessions, job_id)).round == 2 and await resources.redis.llen(queue) == before + 1


async def test_a_retry_that_would_overfill_the_services_server_or_of_a_terminated_service_is_skipped(
        client, sessions, settings, resources):
    """The failed service left its server's count and another order took the room: retried, it would make 3
    services on a server for 2. A job whose service was terminated since has nothing to do. Both are skipped with
    the reason, by id and in bulk, and nothing changes; once the server has room the retry goes through."""
    region, server_id = await add_region(sessions, settings, capacity=2)
    customer_id, plan = await customer_and_plan(client)
    orders = [(await client.post("/v1/services", json=order_body(customer_id, plan, region))).json() for _ in range(2)]
    failed_job, ended_job = [uuid.UUID(order["job"]["id"]) for order in orders]
    async with session_scope(sessions) as session:  # both creates gave up; the second service was terminated since
        for order, status in zip(orders, ("failed", "terminated")):
            await session.execute(update(Job).where(Job.id == uuid.UUID(order["job"]["id"])).values(
                status="failed", attempts=3, error_code="whm_unavailable", error_message="503",
                finished_at=datetime.now(timezone.utc)))
            await session.execute(update(Service).where(Service.id == uuid.UUID(order["service"]["id"]))
                                  .values(status=status))
    for _ in range(2):
        assert (await client.post("/v1/services", json=order_body(customer_id, plan, region))).status_code == 202

    outcome = await jobs_cli.retry(settings, ids=[str(failed_job), str(ended_job)])
    assert outcome["retried"] == []
    reasons = {item["id"]: item["reason"] for item in outcome["skipped"]}
    assert reasons[str(ended_job)] == "its service is terminated now"
    assert re.fullmatch(r"no_capacity: its server '.+' \(region '.+'\) is full \(2 of 2\): raise its capacity or "
                        r"terminate a service there", reasons[str(failed_job)]), reasons
    async with session_scope(sessions) as session:  # this test's tenant only: the database is the run's
        tenant_id = (await session.get(Service, uuid.UUID(orders[0]["service"]["id"]))).tenant_id
        bulk = await ops.retry_matching(session, kind="provision.create", tenant_id=tenant_id)
    assert bulk["retried"] == [] and {item["id"]: item["reason"] for item in bulk["skipped"]} == reasons
    assert (await _row(sessions, failed_job)).status == "failed" and (await _row(sessions, failed_job)).round == 1
    async with sessions() as session:
        assert (await session.get(Service, uuid.UUID(orders[0]["service"]["id"]))).status == "failed"
        assert (await session.get(WhmServer, server_id)).used == 2

    async with session_scope(sessions) as session:
        await session.execute(update(WhmServer).where(WhmServer.id == server_id).values(capacity=3))
    assert (await jobs_cli.retry(settings, ids=[str(failed_job)]))["retried"] == [str(failed_job)]
    async with sessions() as session:
        assert (await session.get(Service, uuid.UUID(orders[0]["service"]["id"]))).status == "provisioning"
        assert (await session.get(WhmServer, server_id)).used == 3


async def _gave_up(sessions, job_id: str) -> None:
    """The job as the worker leaves it when its last attempt failed."""
    async with session_scope(sessions) as session:
        await session.execute(update(Job).where(Job.id == uuid.UUID(job_id)).values(
            status="failed", attempts=3, error_code="whm_unavailable", error_message="503",
            finished_at=datetime.now(timezone.utc)))


async def _succeeded(sessions, job_id: str, **service_values) -> None:
    """The job as the worker leaves it when it succeeded, with its service's new state."""
    async with session_scope(sessions) as session:
        job = await session.get(Job, uuid.UUID(job_id))
        job.status, job.finished_at = "succeeded", datetime.now(timezone.utc)
        await session.execute(update(Service).where(Service.id == job.resource_id).values(**service_values))


async def test_a_retry_of_a_service_action_that_a_later_request_superseded_or_the_state_forbids_is_skipped(
        client, sessions, settings):
    """Ops retrying failed jobs in bulk must not undo what the reseller asked for after them: a plan change that
    gave up, followed by a successful change to another plan, is not run again (it would put the old plan
    back); a suspend that gave up on a service terminated since has nothing left to do. Both are skipped with
    the reason and stay failed; a failed action that is still its service's latest is retried."""
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    other = [f"p{uuid.uuid4().hex[:6]}" for _ in range(2)]
    for code in other:
        assert (await client.post("/v1/plans", json={"code": code, "name": code, "whm_package": "pro",
                                                     "prices": {"monthly": 9990}})).status_code == 201
    services = []
    for _ in range(3):
        order = (await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()
        await _succeeded(sessions, order["job"]["id"], status="active", username=f"u{uuid.uuid4().hex[:7]}")
        services.append(order["service"]["id"])
    changed, terminated, latest = services

    async def act(service_id: str, action: str, body: dict | None = None) -> str:
        response = await client.post(f"/v1/services/{service_id}/{action}", json=body)
        assert response.status_code == 202, response.text
        return response.json()["job"]["id"]

    stale_change = await act(changed, "change-plan", {"plan": other[0]})
    await _gave_up(sessions, stale_change)
    newer_change = await act(changed, "change-plan", {"plan": other[1]})
    await _succeeded(sessions, newer_change)
    stale_suspend = await act(terminated, "suspend")
    await _gave_up(sessions, stale_suspend)
    await _succeeded(sessions, await act(terminated, "terminate"), status="terminated")
    latest_suspend = await act(latest, "suspend")
    await _gave_up(sessions, latest_suspend)

    outcome = await jobs_cli.retry(settings, ids=[stale_change, stale_suspend, latest_suspend])

    assert outcome["retried"] == [latest_suspend]
    assert {item["id"]: item["reason"] for item in outcome["skipped"]} == {
        stale_change: f"superseded by a later job on its service: {newer_change} (provision.change_plan, succeeded)",
        stale_suspend: "its service is terminated now: cannot suspend a terminated service"}
    for job_id in (stale_change, stale_suspend):
        row = await _row(sessions, uuid.UUID(job_id))
        assert (row.status, row.round) == ("failed", 1)
    assert (await _row(sessions, uuid.UUID(latest_suspend))).status == "queued"


async def test_cancelling_a_provisioning_job_leaves_its_service_failed_not_waiting(client, sessions, settings):
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    body = (await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()
    job_id, service_id = uuid.UUID(body["job"]["id"]), uuid.UUID(body["service"]["id"])

    assert (await jobs_cli.cancel(settings, ids=[str(job_id)]))["cancelled"] == [str(job_id)]

    async with sessions() as session:
        assert (await session.get(Service, service_id)).status == "failed"
    assert (await client.get(f"/v1/jobs/{job_id}")).json()["status"] == "cancelled"

    # The reseller's way on: provisioning the failed service again is a new job, not the cancelled one.
    again = await client.post(f"/v1/provision/{service_id}")
    assert again.status_code == 202, again.text
    assert again.json()["job"]["id"] != str(job_id) and again.json()["job"]["kind"] == "provision.create"
    assert again.json()["service"]["status"] == "provisioning"


async def test_cancelling_an_action_that_already_ran_an_attempt_needs_force(client, sessions, settings):
    """A suspend whose attempt timed out may have suspended the account: cancelled, the service would stay
    `active` while WHM has it suspended. Skipped with the reason unless forced; a queued one that never ran, or
    one a later job superseded, is cancelled as any job."""
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    orders = [(await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()
              for _ in range(3)]
    async with session_scope(sessions) as session:
        for order in orders:
            await session.execute(update(Service).where(Service.id == uuid.UUID(order["service"]["id"]))
                                  .values(status="active"))
            await session.execute(update(Job).where(Job.id == uuid.UUID(order["job"]["id"])).values(
                status="succeeded", finished_at=datetime.now(timezone.utc)))
    suspends = [(await client.post(f"/v1/services/{o['service']['id']}/suspend")).json()["job"]["id"]
                for o in orders]
    async with session_scope(sessions) as session:  # the first two ran an attempt that timed out
        for job_id in suspends[:2]:
            await session.execute(update(Job).where(Job.id == uuid.UUID(job_id)).values(
                status="retrying", attempts=1, error_code="whm_timeout", error_message="no answer"))
    superseded = (await client.post(f"/v1/services/{orders[1]['service']['id']}/terminate"))
    assert superseded.status_code == 409  # in flight: a suspend must end first; supersede it by hand
    async with session_scope(sessions) as session:
        await session.execute(update(Service).where(Service.id == uuid.UUID(orders[1]["service"]["id"]))
                              .values(last_job_id=uuid.uuid4()))

    outcome = await jobs_cli.cancel(settings, ids=suspends)
    assert outcome["cancelled"] == suspends[1:], outcome
    [skipped] = outcome["skipped"]
    assert skipped["id"] == suspends[0] and "may have taken effect" in skipped["reason"]
    assert "stay active" in skipped["reason"] and "--force" in skipped["reason"]
    assert (await client.get(f"/v1/jobs/{suspends[0]}")).json()["status"] == "retrying"

    forced = await jobs_cli.cancel(settings, ids=[suspends[0]], force=True)
    assert forced == {"cancelled": [suspends[0]], "skipped": []}
    assert (await client.get(f"/v1/jobs/{suspends[0]}")).json()["status"] == "cancelled"


async def test_an_action_whose_every_attempt_changed_nothing_is_cancelled_without_force(client, sessions, settings):
    """Attempts that WHM refused (result 0) changed nothing: no --force needed. One more attempt that timed out
    may have: --force again."""
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    orders = [(await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()
              for _ in range(2)]
    suspends = []
    for order in orders:
        async with session_scope(sessions) as session:
            await session.execute(update(Service).where(Service.id == uuid.UUID(order["service"]["id"]))
                                  .values(status="active"))
            await session.execute(update(Job).where(Job.id == uuid.UUID(order["job"]["id"])).values(
                status="succeeded", finished_at=datetime.now(timezone.utc)))
        suspends.append((await client.post(f"/v1/services/{order['service']['id']}/suspend")).json()["job"]["id"])
    now = datetime.now(timezone.utc)
    async with session_scope(sessions) as session:
        for job_id, codes in zip(suspends, (["whm_rejected", "whm_rejected"], ["whm_rejected", "whm_timeout"])):
            await session.execute(update(Job).where(Job.id == uuid.UUID(job_id)).values(
                status="retrying", attempts=len(codes), error_code=codes[-1], error_message="..."))
            for attempt, code in enumerate(codes, 1):
                session.add(JobAttempt(job_id=uuid.UUID(job_id), round=1, attempt=attempt, started_at=now,
                                       finished_at=now, outcome="retrying", error_code=code, error_message="..."))

    outcome = await jobs_cli.cancel(settings, ids=suspends)
    assert outcome["cancelled"] == [suspends[0]], outcome
    assert [s["id"] for s in outcome["skipped"]] == [suspends[1]] and "--force" in outcome["skipped"][0]["reason"]


async def test_cancelling_an_old_failed_create_leaves_a_newer_creates_service_alone(client, sessions, settings):
    """Ops tidy the failed list after the reseller provisioned the service again: cancelling the old create must not
    fail the service the new create is working on (it would then succeed with its service still `failed`)."""
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    order = (await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()
    old_job, service_id = uuid.UUID(order["job"]["id"]), uuid.UUID(order["service"]["id"])
    await _gave_up(sessions, order["job"]["id"])  # and its service failed, as the worker leaves them
    async with session_scope(sessions) as session:
        await session.execute(update(Service).where(Service.id == service_id).values(status="failed"))
    again = (await client.post(f"/v1/provision/{service_id}")).json()
    assert again["service"]["status"] == "provisioning" and again["job"]["id"] != str(old_job)

    assert (await jobs_cli.cancel(settings, ids=[str(old_job)]))["cancelled"] == [str(old_job)]
    async with sessions() as session:
        service = await session.get(Service, service_id)
    assert (service.status, str(service.last_job_id)) == ("provisioning", again["job"]["id"])


async def test_a_late_dispatch_mark_of_an_earlier_round_leaves_the_retried_round_to_be_sent(sessions):
    # The API marks sent jobs a few ms later, in a batch; a retry can land in between. Marking round 1 then must
    # not hide round 2's unsent message from the one who retried it (or from the relay).
    kind = _kind()
    async with session_scope(sessions) as session:
        job_id = _add_job(session, kind, "failed", attempts=1).id
    async with session_scope(sessions) as session:
        assert (await ops.retry_jobs(session, [job_id]))["retried"] == [str(job_id)]
    async with session_scope(sessions) as session:
        await mark_dispatched(session, [(job_id, 1)])  # the first round's mark, arriving late
    async with sessions() as session:
        assert [job.id for job in await ops.claim_undispatched(session, [job_id])] == [job_id]
    async with session_scope(sessions) as session:
        await mark_dispatched(session, [(job_id, 2)])
    async with sessions() as session:
        assert await ops.claim_undispatched(session, [job_id]) == []


async def test_a_retried_job_runs_again_on_a_real_worker_and_keeps_both_rounds(worker_broker, sessions):  # noqa: F811
    async with session_scope(sessions) as session:
        job = record_job(session, kind="test.scripted", tenant_id=None, max_attempts=3)
    PLANS[str(job.id)] = ["permanent", "ok"]
    dispatch(worker_broker, [job])
    assert (await _wait(sessions, job.id, "failed")).attempts == 1

    async with sessions() as session:
        async with session.begin():
            assert (await ops.retry_jobs(session, [job.id]))["retried"] == [str(job.id)]
        requeued = take_outbox(session)
    assert dispatch(worker_broker, requeued) == [(job.id, 2)]

    done = await _wait(sessions, job.id, "succeeded")
    assert (done.round, done.attempts, done.error_code) == (2, 1, None)
    assert await _history(sessions, job.id) == [(1, 1, "failed"), (2, 1, "succeeded")]


async def test_show_has_the_job_and_every_attempt_of_both_rounds(worker_broker, sessions, settings):  # noqa: F811
    async with session_scope(sessions) as session:
        job = record_job(session, kind="test.scripted", tenant_id=None, max_attempts=3)
    PLANS[str(job.id)] = ["transient", "permanent", "ok"]
    dispatch(worker_broker, [job])
    await _wait(sessions, job.id, "failed")
    async with sessions() as session:  # round 2, sent to the test worker's broker
        async with session.begin():
            assert (await ops.retry_jobs(session, [job.id]))["retried"] == [str(job.id)]
        dispatch(worker_broker, take_outbox(session))
    await _wait(sessions, job.id, "succeeded")

    shown = await jobs_cli.show(settings, str(job.id))

    listed, _ = await jobs_cli.list_page(settings, kind="test.scripted", limit=1000)
    [line] = [j for j in listed if j["id"] == str(job.id)]
    assert {k: v for k, v in shown.items() if k != "history"} == line  # the job as `jobs list` prints it
    assert (shown["status"], shown["round"], shown["attempts"]) == ("succeeded", 2, 1)
    history = shown["history"]
    assert [(a["round"], a["attempt"], a["outcome"], a["error"]) for a in history] == [
        (1, 1, "retrying", {"code": "whm_unavailable", "message": "attempt 1: WHM answered 503"}),
        (1, 2, "failed", {"code": "whm_rejected", "message": "Unable to find package nope"}),
        (2, 1, "succeeded", None)]
    for attempt in history:
        assert attempt["started_at"].endswith("Z") and attempt["finished_at"].endswith("Z"), attempt
        assert attempt["started_at"] <= attempt["finished_at"]
    assert history[1]["finished_at"] <= history[2]["started_at"]


async def test_show_refuses_an_unknown_or_malformed_id(sessions):
    async with sessions() as session:
        with pytest.raises(NotFound, match="no such job"):
            await ops.job_with_history(session, str(uuid.uuid4()))
        with pytest.raises(ValidationFailed, match="not a job id"):
            await ops.job_with_history(session, "nope")


async def _wait(sessions, job_id, status: str) -> Job:
    for _ in range(250):
        job = await _row(sessions, job_id)
        if job.status == status:
            return job
        await asyncio.sleep(0.02)
    raise AssertionError(f"job is {job.status}, never {status}")


# The command line. `hostq jobs` runs its own event loop (asyncio.run), so these tests are synchronous.

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hostq")
    jobs_cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


def _in_db(settings, work):
    async def go():
        engine = make_engine(settings.database_url, pool_size=1)
        try:
            async with session_scope(make_sessionmaker(engine)) as session:
                return work(session)
        finally:
            await engine.dispose()
    return asyncio.run(go())


@pytest.mark.parametrize("argv, message", [
    (["jobs", "retry"], "one of the arguments ID --status is required"),
    (["jobs", "retry", "--status", "failed", "0190a6c4-0000-7000-8000-000000000000"], "not allowed with"),
    (["jobs", "retry", "--status", "succeeded"], "invalid choice"),
    (["jobs", "cancel"], "the following arguments are required: ID"),
    (["jobs", "list", "--limit", "0"], "must be a whole number"),
])
def test_cli_usage_errors_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(argv)
    captured = capsys.readouterr()
    assert exit_.value.code == 2 and message in captured.err and captured.out == ""


def test_cli_retry_list_and_cancel_print_json(settings, capsys):
    kind = _kind()
    failed, queued = _in_db(settings, lambda s: [_add_job(s, kind, "failed", attempts=3).id,
                                                 _add_job(s, kind, "queued").id])

    def run(*argv) -> list[dict]:
        args = _parser().parse_args(["jobs", *argv])
        args.run(args, settings)
        return [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    assert [(j["id"], j["status"]) for j in run("list", "--kind", kind)] == [(str(queued), "queued"),
                                                                             (str(failed), "failed")]
    args = _parser().parse_args(["jobs", "list", "--kind", kind, "--limit", "1"])
    args.run(args, settings)
    cut = capsys.readouterr()
    assert [json.loads(line)["id"] for line in cut.out.splitlines()] == [str(queued)]
    assert "hostq: the newest 1 shown; more jobs match: raise --limit to see them" in cut.err.splitlines()
    with pytest.raises(SystemExit) as exit_:  # done for the job that exists, and exit 1 for the typo
        run("retry", str(failed), "bad-id")
    out, err = capsys.readouterr()
    assert exit_.value.code == 1 and "hostq: 1 of the ids given name no job: bad-id" in err
    assert json.loads(out) == {"retried": [str(failed)], "skipped": [{"id": "bad-id", "reason": "not a job id"}]}
    assert [(j["status"], j["round"]) for j in run("list", "--kind", kind, "--status", "queued")] == [
        ("queued", 1), ("queued", 2)]
    assert run("cancel", str(queued)) == [{"cancelled": [str(queued)], "skipped": []}]
    # Skipped for its state (already cancelled): an answer, exit 0.
    assert run("cancel", str(queued)) == [{"cancelled": [], "skipped": [{"id": str(queued),
                                                                         "reason": "status is cancelled"}]}]
    nobody = str(uuid.uuid4())
    with pytest.raises(SystemExit) as exit_:
        run("cancel", nobody)
    assert exit_.value.code == 1
    with pytest.raises(ValueError, match="--kind goes with --status"):
        run("retry", str(failed), "--kind", kind)


# Runs the real `hostq` entry point; registers `jobs` on its parser when hostq/cli.py does not yet.
_HOSTQ = """
import argparse, sys
from hostq import cli, jobs_cli
build = cli._parser
def parser():
    p = build()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    if "jobs" not in sub.choices:
        jobs_cli.register(sub)
    return p
cli._parser = parser
cli.main(sys.argv[1:])
"""


def _hostq(test_env, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _HOSTQ, *argv], env={**os.environ, **test_env},
                          capture_output=True, text=True, timeout=30)


def test_hostq_jobs_show_prints_one_object_or_one_line_on_stderr(settings, test_env):
    kind = _kind()
    job_id = _in_db(settings, lambda s: _add_job(s, kind, "failed", attempts=2).id)
    done = _hostq(test_env, "jobs", "show", str(job_id))
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()
    shown = json.loads(line)
    assert shown["id"] == str(job_id) and [(a["round"], a["attempt"], a["outcome"]) for a in shown["history"]] == [
        (1, 1, "retrying"), (1, 2, "failed")]
    assert shown["error"]["code"] == "whm_unavailable" and shown["started_at"] and shown["finished_at"]
    assert {"result", "next_attempt_at", "request_id"} <= shown.keys()

    missing = str(uuid.uuid4())
    for argv, message in ((["jobs", "show", missing], f"hostq: no such job: {missing}"),
                          (["jobs", "show", "nope"], "hostq: not a job id: 'nope'")):
        refused = _hostq(test_env, *argv)
        assert refused.returncode == 1 and refused.stdout == "", refused
        assert refused.stderr.splitlines() == [message], refused.stderr


def test_hostq_jobs_retry_by_kind_as_a_process(settings, test_env):
    kind = _kind()
    ids = _in_db(settings, lambda s: [_add_job(s, kind, "failed", attempts=3).id for _ in range(2)])
    done = _hostq(test_env, "jobs", "retry", "--status", "failed", "--kind", kind)
    assert done.returncode == 0, done.stderr
    # The test's own kind is no kind of hostq's: a typo in --kind is pointed out.
    assert done.stderr.splitlines() == [f"hostq: warning: no job kind {kind!r} in hostq (kinds: "
                                        f"{', '.join(rules.KINDS)})"]
    [line] = done.stdout.splitlines()
    assert sorted(json.loads(line)["retried"]) == sorted(str(i) for i in ids)
    assert json.loads(line)["skipped"] == []


async def test_a_job_held_a_moment_by_another_transaction_is_waited_for_not_left_to_the_relay(sessions):
    """Two `hostq jobs retry` at once: each one's select locks rows the other has just retried (they stopped
    matching), for as long as its batch runs. Skipping them left 1,800 of 2,000 retried jobs to the relay."""
    kind = _kind()
    async with session_scope(sessions) as session:
        job_id = _add_job(session, kind, "queued").id
    released = asyncio.Event()

    async def hold(then_mark: bool) -> None:
        async with session_scope(sessions) as holder:
            await holder.execute(select(Job.id).where(Job.id == job_id).with_for_update())
            held.set()
            await released.wait()
            if then_mark:  # the relay sent it meanwhile
                await holder.execute(update(Job).where(Job.id == job_id)
                                     .values(dispatched_at=datetime.now(timezone.utc)))

    for then_mark, expected in ((False, [job_id]), (True, [])):
        held = asyncio.Event()
        holder = asyncio.create_task(hold(then_mark))
        await held.wait()
        async with sessions() as session:
            async with session.begin():
                claim = asyncio.create_task(ops.claim_undispatched(session, [job_id]))
                await asyncio.sleep(0.3)
                assert not claim.done()  # waiting for the row
                released.set()
                assert [job.id for job in await claim] == expected
        await holder
        released.clear()

    held = asyncio.Event()
    async with session_scope(sessions) as session:
        await session.execute(update(Job).where(Job.id == job_id).values(dispatched_at=None))
        free_id = _add_job(session, kind, "queued").id
    holder = asyncio.create_task(hold(False))
    await held.wait()
    try:
        async with sessions() as session:
            async with session.begin():
                # held longer than it waits: that job is left to the relay, and the rest of the batch is claimed
                # (before, the lock timeout failed the whole batch, and the relay sent all of it)
                claimed = await ops.claim_undispatched(session, [job_id, free_id], wait_s=0.2)
                assert [job.id for job in claimed] == [free_id]
                assert await session.scalar(text("SHOW lock_timeout")) == "0"  # the wait's limit ended with it
    finally:
        released.set()
        await holder
