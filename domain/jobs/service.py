"""Recording jobs with the business change (the outbox), and reading them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import and_, case, func, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.errors import NotFound, ValidationFailed
from domain.ids import new_id
from domain.jobs import rules
from domain.jobs.models import Job
from domain.pagination import page, paginate
from domain.pg import Row

OUTBOX = "hostq_outbox"


def new_job(*, kind: str, tenant_id: uuid.UUID | None, max_attempts: int, resource_type: str | None = None,
            resource_id: uuid.UUID | None = None, region: str | None = None, args: dict | None = None,
            request_id: str | None = None) -> Job:
    """A queued job outside any session: the row that record_job adds, for callers that INSERT it themselves
    (the asyncpg paths). Its other columns (result, error, times, dispatched_at) start NULL."""
    return Job(id=new_id(), created_at=datetime.now(timezone.utc), kind=kind, queue=rules.queue_for(kind, region),
               status=rules.QUEUED, attempts=0, round=1, max_attempts=max_attempts, tenant_id=tenant_id,
               resource_type=resource_type, resource_id=resource_id, args=args or {}, request_id=request_id)


def record_job(session: AsyncSession, *, kind: str, tenant_id: uuid.UUID | None, max_attempts: int,
               resource_type: str | None = None, resource_id: uuid.UUID | None = None,
               region: str | None = None, args: dict | None = None, request_id: str | None = None) -> Job:
    """Add a queued job to this transaction; it is sent to the broker after commit."""
    job = new_job(kind=kind, tenant_id=tenant_id, max_attempts=max_attempts, resource_type=resource_type,
                  resource_id=resource_id, region=region, args=args, request_id=request_id)
    session.add(job)
    session.info.setdefault(OUTBOX, []).append(job)
    return job


def take_outbox(session: AsyncSession) -> list[Job]:
    """The jobs recorded in this session's transaction, emptied (call after commit)."""
    return session.info.pop(OUTBOX, [])


_JOB_BY_ID = """
SELECT id, kind, status, attempts, max_attempts, created_at, started_at, finished_at, next_attempt_at,
       resource_type, resource_id, error_code, error_message, result, request_id
FROM jobs WHERE id = $1 AND tenant_id = $2"""


async def get_job(conn: Any, job_id: uuid.UUID | None, tenant_id: uuid.UUID) -> Row:
    """A tenant's job, or NotFound (also for another tenant's job); one statement on an asyncpg connection
    (domain/pg.py: polled by every reseller, this read skips the ORM)."""
    record = await conn.fetchrow(_JOB_BY_ID, job_id, tenant_id) if job_id else None
    if record is None:
        raise NotFound("no such job")
    return Row(record)


async def mark_dispatched(session: AsyncSession, sent: list[tuple[uuid.UUID, int]]) -> None:
    """Note that these (job id, round) messages reached the broker; a job since retried into a newer round keeps
    its NULL dispatched_at, so its new message is still sent (by whoever retried it, or by the relay). A queued
    job's updated_at becomes its first send's time: the stalled sweep's backoff counts from there."""
    now = datetime.now(timezone.utc)
    await session.execute(update(Job).where(tuple_(Job.id, Job.round).in_(sent), Job.dispatched_at.is_(None))
                          .values(dispatched_at=now,
                                  updated_at=case((Job.status == rules.QUEUED, now), else_=Job.updated_at)))


async def undispatched_jobs(session: AsyncSession, grace_s: float, limit: int = 500,
                            skip_queues: Sequence[str] = ()) -> list[Job]:
    """Jobs changed more than `grace_s` ago whose message is not with the broker: queued jobs recorded but never
    sent, and queued or retrying ones whose message a worker could not send back (tracking.hand_to_relay)."""
    cutoff = datetime.now(timezone.utc) - timedelta(seconds=grace_s)
    # From the last change, not creation: a job retried by ops just now is being sent by whoever retried it.
    changed = func.coalesce(Job.updated_at, Job.created_at)
    stmt = (select(Job).where(Job.status.in_((rules.QUEUED, rules.RETRYING)), Job.dispatched_at.is_(None),
                              changed < cutoff, *_not_in(skip_queues))
            .order_by(Job.created_at).limit(limit).with_for_update(skip_locked=True))
    return list((await session.scalars(stmt)).all())


# When a stalled job was last sent (or last moved): the sweep takes the longest-waiting first, so that a backlog it
# sends again (a region without a worker) takes its turn with a message lost elsewhere, never ahead of it each time.
# A retrying job's message was due at next_attempt_at, or sent again at updated_at if later (mark_resent).
_LAST_SENT = case((Job.status == rules.QUEUED, Job.dispatched_at),
                  (Job.status == rules.RETRYING, func.greatest(Job.next_attempt_at, Job.updated_at)),
                  else_=func.greatest(Job.updated_at, Job.dispatched_at))  # running: started, or sent again


def _not_in(queues: Sequence[str]) -> list:
    """The condition leaving out these queues' jobs (those whose sends rest: a backlog of theirs must not take
    every place of a batch from the other queues' jobs), if any."""
    return [Job.queue.notin_(queues)] if queues else []


#: The longest a stalled job waits between two sends by the stalled sweep, however long it has waited.
STALLED_BACKOFF_CAP = timedelta(hours=1)


def _due_again(now: datetime, after: timedelta, last_sent, waited):
    """The condition that a job last sent at `last_sent`, having waited `waited` by then, waited long enough since:
    `after`, or as long as `waited` if longer (at most STALLED_BACKOFF_CAP)."""
    return last_sent < now - func.greatest(after, func.least(waited, STALLED_BACKOFF_CAP))


async def stalled_jobs(session: AsyncSession, after_s: float, running_after_s: float | None = None,
                       limit: int = 500, skip_queues: Sequence[str] = ()) -> list[Job]:
    """Jobs the broker should have delivered more than `after_s` ago and has not: `queued` and sent, with no
    attempt started since, or `retrying` with their next attempt that much overdue (or never scheduled, and
    unchanged that long); and `running` jobs
    unchanged for `running_after_s` (default `after_s`), which no attempt can legitimately take.

    A job sent again waits longer each time: `after_s`, or as long as it had already waited when last sent (since
    first sent, past its next attempt's due time, or since its attempt started), if longer (at most
    STALLED_BACKOFF_CAP). A region without a worker for hours thus gets a few duplicates of each job, not one per
    job every `after_s` (a broker's memory filling with them).

    Their message was lost (a broker that restarted without its data, a re-send that failed, a running
    attempt's worker and its message lost together, its outcome never recorded), or they wait behind a long
    backlog. Sending them again is harmless either way: a delivery of a job that has moved on is skipped, and
    the service lock keeps a duplicate from running beside the original. A `running` job's next attempt
    closes the lost one as `worker_lost` (it counts as an attempt).
    """
    now = datetime.now(timezone.utc)
    after = timedelta(seconds=after_s)
    cutoff = now - after
    running_cutoff = now - timedelta(seconds=after_s if running_after_s is None else running_after_s)
    # When each was last sent, and how long it had waited by then (negative: not since that wait began):
    # a queued job, since its first send (mark_dispatched, which sets its updated_at)
    queued = (Job.dispatched_at, Job.dispatched_at - func.coalesce(Job.updated_at, Job.created_at))
    # a retrying one, when sent again (mark_resent, which sets its updated_at) past its due time
    resent = func.coalesce(Job.updated_at, Job.created_at)
    retrying = (resent, resent - Job.next_attempt_at)
    # a running one, when sent again (mark_resent, which sets its dispatched_at) since its attempt started
    sent = func.coalesce(Job.dispatched_at, Job.created_at)
    running = (sent, sent - Job.updated_at)
    # The IN is implied by the OR, but lets Postgres use the partial index of unfinished jobs (ix_jobs_unfinished).
    stalled = (Job.status.in_((rules.QUEUED, rules.RETRYING, rules.RUNNING)),
               or_(and_(Job.status == rules.QUEUED, Job.dispatched_at < cutoff, _due_again(now, after, *queued)),
                   and_(Job.status == rules.RETRYING, Job.next_attempt_at < cutoff, _due_again(now, after, *retrying)),
                   # its worker died between recording the failure and scheduling the retry
                   and_(Job.status == rules.RETRYING, Job.next_attempt_at.is_(None), Job.updated_at < cutoff),
                   and_(Job.status == rules.RUNNING, Job.updated_at < running_cutoff,
                        _due_again(now, after, *running))),
               *_not_in(skip_queues))
    # Each queue's longest-waiting first, the queues in turn: a region whose backlog fills more than a batch (no
    # worker for hours) takes no place from another region's lost message.
    ranked = select(Job.id, _LAST_SENT.label("last_sent"), func.row_number().over(
        partition_by=Job.queue, order_by=_LAST_SENT).label("turn")).where(*stalled).subquery()
    # The batch is chosen on the ids alone (a top-N sort), then its rows are locked: rechecked, skipped if taken.
    batch = select(ranked).order_by(ranked.c.turn, ranked.c.last_sent).limit(limit).subquery()
    stmt = (select(Job).join(batch, batch.c.id == Job.id).where(*stalled)
            .order_by(batch.c.turn, batch.c.last_sent).with_for_update(of=Job, skip_locked=True))
    return list((await session.scalars(stmt)).all())


async def lost_with_broker(session: AsyncSession, before: datetime, limit: int = 500,
                           skip_queues: Sequence[str] = (), only_queues: Sequence[str] | None = None) -> list[Job]:
    """Jobs whose message a broker that lost its data at `before` held: `queued` and sent before then, and
    `retrying` (their delayed message) unless sent again since (mark_resent). `running` ones are not: their
    worker still records the outcome, and the stalled sweep covers one that died too. `skip_queues` leaves
    those queues' jobs out, `only_queues` takes theirs alone."""
    stmt = (select(Job).where(Job.status.in_((rules.QUEUED, rules.RETRYING)),
                              or_(and_(Job.status == rules.QUEUED, Job.dispatched_at < before),
                                  and_(Job.status == rules.RETRYING, Job.updated_at < before)),
                              *_not_in(skip_queues), *([Job.queue.in_(only_queues)] if only_queues is not None else []))
            .order_by(Job.created_at).limit(limit).with_for_update(skip_locked=True))
    return list((await session.scalars(stmt)).all())


async def mark_resent(session: AsyncSession, sent: list[tuple[uuid.UUID, int]]) -> None:
    """These (job id, round) messages were sent again, stalled or lost: the next sweep waits as long again
    before sending another. A retrying job's was sent for its next attempt's due time (workers/dispatch.py
    due_in_ms), which stays as it was (set now if it was never noted): its updated_at says when it was sent."""
    now = datetime.now(timezone.utc)
    sent_now = tuple_(Job.id, Job.round).in_(sent)
    await session.execute(update(Job).where(sent_now, Job.status == rules.QUEUED).values(dispatched_at=now))
    await _resent_retrying(session, sent_now, now)
    # a running job keeps its attempt's start (updated_at): the backoff counts from it
    await session.execute(update(Job).where(sent_now, Job.status == rules.RUNNING).values(dispatched_at=now))


async def _resent_retrying(session: AsyncSession, sent_now, now: datetime) -> None:
    """Retrying jobs whose message was just sent again: neither the sweep, nor the resend after a broker's loss,
    nor the relay (a message a worker could not send back) sends another for them before it is due."""
    await session.execute(update(Job).where(sent_now, Job.status == rules.RETRYING).values(
        next_attempt_at=func.coalesce(Job.next_attempt_at, now), updated_at=now,
        dispatched_at=func.coalesce(Job.dispatched_at, now)))


async def mark_relayed(session: AsyncSession, sent: list[tuple[uuid.UUID, int]]) -> None:
    """The relay sent these (job id, round) messages: queued jobs are dispatched (mark_dispatched), and a retrying
    one's message is with the broker again, as after any resend (mark_resent)."""
    await mark_dispatched(session, sent)
    now, sent_now = datetime.now(timezone.utc), tuple_(Job.id, Job.round).in_(sent)
    # a retrying job's first send since it was handed over: its backoff counts from now, as a queued job's from its
    # first send (stalled_jobs), not from a due time long past (the broker away for an hour)
    await session.execute(update(Job).where(sent_now, Job.status == rules.RETRYING).values(
        next_attempt_at=func.greatest(Job.next_attempt_at, now)))
    await _resent_retrying(session, sent_now, now)


def check_filter(status: str | None, kind: str | None = None) -> None:
    """ValidationFailed naming the field when a jobs filter names a status or kind that does not exist."""
    if problem := rules.filter_problem(status, kind):
        field, message = problem
        raise ValidationFailed(f"{field}: {message}", errors=[{"field": field, "message": message}])


async def list_jobs(session: AsyncSession, *, limit: int, cursor: str | None, tenant_id: uuid.UUID | None = None,
                    status: str | None = None, kind: str | None = None,
                    resource_id: uuid.UUID | None = None) -> tuple[list[Job], str | None]:
    """A page of jobs, newest first, filtered by tenant (None: every tenant), status, kind and resource."""
    check_filter(status)  # the kind where it comes in (the API refuses, the CLI warns): tests make their own
    stmt = select(Job)
    for column, value in ((Job.tenant_id, tenant_id), (Job.status, status), (Job.kind, kind),
                          (Job.resource_id, resource_id)):
        if value is not None:
            stmt = stmt.where(column == value)
    rows = list((await session.scalars(paginate(stmt, Job.id, limit, cursor))).all())
    return page(rows, limit)
