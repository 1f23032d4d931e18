"""Ops actions on jobs (list, show, retry, cancel), shared by `hostq jobs` and the ops dashboard."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timezone
from typing import TypedDict

from sqlalchemy import Select, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from domain.errors import NotFound, ValidationFailed
from domain.ids import parse_id
from domain.jobs import effects, rules
from domain.jobs.models import Job, JobAttempt
from domain.jobs import service as jobs_service
from domain.jobs.service import OUTBOX

NOT_AN_ID, NO_SUCH_JOB = "not a job id", "no such job"


class Skipped(TypedDict):
    """A job an ops action left alone, and why."""

    id: str
    reason: str


class RetryOutcome(TypedDict):
    retried: list[str]
    skipped: list[Skipped]


class CancelOutcome(TypedDict):
    cancelled: list[str]
    skipped: list[Skipped]


def retry_refusal(status: str) -> str | None:
    """Why ops cannot retry a job in `status` (only `failed` jobs go back to `queued`), or None."""
    return None if rules.can_move(status, rules.QUEUED) else f"status is {status}"


def cancel_refusal(status: str) -> str | None:
    """Why ops cannot cancel a job in `status`, or None.

    `running` is refused although the state machine allows it: the attempt in progress
    (a WHM call, a payment) cannot be interrupted safely, and its outcome would be lost.
    """
    if status == rules.RUNNING or not rules.can_move(status, rules.CANCELLED):
        return f"status is {status}"
    return None


async def list_jobs(session: AsyncSession, *, status: str | None = None, kind: str | None = None,
                    tenant_id: uuid.UUID | None = None, limit: int = 100,
                    cursor: str | None = None) -> tuple[list[Job], str | None]:
    """A newest-first page of every tenant's jobs, filtered, and the cursor of the next page."""
    return await jobs_service.list_jobs(session, limit=limit, cursor=cursor, tenant_id=tenant_id, status=status,
                                        kind=kind)


async def job_with_history(session: AsyncSession, job_id: str) -> tuple[Job, list[JobAttempt]]:
    """The job and every attempt of every round, in order; NotFound for a missing job, ValidationFailed for a bad id."""
    parsed = parse_id(job_id)
    if parsed is None:
        raise ValidationFailed(f"{NOT_AN_ID}: {job_id!r}", errors=[{"field": "id", "message": NOT_AN_ID}])
    job = await session.get(Job, parsed)
    if job is None:
        raise NotFound(f"{NO_SUCH_JOB}: {job_id}")
    attempts = await session.scalars(select(JobAttempt).where(JobAttempt.job_id == parsed)
                                     .order_by(JobAttempt.round, JobAttempt.attempt))
    return job, list(attempts)


async def _apply(session: AsyncSession, job_ids: Iterable[uuid.UUID | str], refusal: Callable[[str], str | None],
                 act: Callable[[Job], Awaitable[str | None]]) -> tuple[list[str], list[Skipped]]:
    """Lock the named jobs, `act` on each one `refusal` allows, and skip the rest with its reason (or the one
    `act` returns: what only the job's resource can tell)."""
    ids, skipped = _parse_ids(job_ids)
    jobs = await _locked(session, select(Job).where(Job.id.in_(ids))) if ids else {}
    done, refused = await _each([(job_id, jobs.get(job_id)) for job_id in ids], refusal, act)
    return done, skipped + refused


async def _each(jobs: list[tuple[uuid.UUID, Job | None]], refusal: Callable[[str], str | None],
                act: Callable[[Job], Awaitable[str | None]]) -> tuple[list[str], list[Skipped]]:
    """`act` on each locked job `refusal` allows; (ids acted on, skipped with the reason)."""
    done: list[str] = []
    skipped: list[Skipped] = []
    for job_id, job in jobs:
        reason = NO_SUCH_JOB if job is None else refusal(job.status)
        if not reason:
            reason = await act(job)
        if reason:
            skipped.append({"id": str(job_id), "reason": reason})
        else:
            done.append(str(job_id))
    return done, skipped


async def retry_jobs(session: AsyncSession, job_ids: Iterable[uuid.UUID | str], *,
                     adopt: bool = False) -> RetryOutcome:
    """Put these failed jobs back to `queued` for a fresh round; skip the others with a reason. `adopt`: each is
    a create that found its account made outside hostq (MADE_OUTSIDE), which the operator says is the service's:
    the retry adopts it (effects.adopt_outside_account)."""
    async def requeue(job: Job) -> str | None:
        if adopt and (refused := effects.adoption_refusal(job)):
            return refused
        if (refused := await _requeue(session, job)) is None and adopt:
            await effects.adopt_outside_account(session, job)
        return refused

    retried, skipped = await _apply(session, job_ids, retry_refusal, requeue)
    return {"retried": retried, "skipped": skipped}


async def retry_matching(session: AsyncSession, *, status: str = rules.FAILED, kind: str | None = None,
                         tenant_id: uuid.UUID | None = None, after: uuid.UUID | None = None,
                         limit: int | None = None) -> RetryOutcome:
    """Retry every job in `status` (only `failed` can be), optionally of one kind or tenant; with `limit`, only
    that many, in id order from after `after` (a batch: each job examined is in `retried` or `skipped`)."""
    if status != rules.FAILED:
        raise ValidationFailed("only failed jobs can be retried",
                               errors=[{"field": "status", "message": "must be failed"}])
    stmt = select(Job).where(Job.status == rules.FAILED)
    if kind is not None:
        stmt = stmt.where(Job.kind == kind)
    if tenant_id is not None:
        stmt = stmt.where(Job.tenant_id == tenant_id)
    if after is not None:
        stmt = stmt.where(Job.id > after)
    if limit is not None:
        stmt = stmt.limit(limit)  # _locked orders by id
    jobs = await _locked(session, stmt)
    retried, skipped = await _each(list(jobs.items()), retry_refusal, lambda job: _requeue(session, job))
    return {"retried": retried, "skipped": skipped}


async def cancel_jobs(session: AsyncSession, job_ids: Iterable[uuid.UUID | str], *,
                      force: bool = False) -> CancelOutcome:
    """Cancel these queued, retrying or failed jobs; a message still in the broker is then skipped. Without
    `force`, an action on a service whose WHM call may already have taken effect is skipped (effects.in_doubt)."""
    now = datetime.now(timezone.utc)

    async def cancel(job: Job) -> str | None:
        if not force and (reason := await effects.in_doubt(session, job)):
            return reason
        job.status, job.finished_at, job.next_attempt_at, job.updated_at = rules.CANCELLED, now, None, now
        await effects.on_cancelled(session, job)
        return None

    cancelled, skipped = await _apply(session, job_ids, cancel_refusal, cancel)
    return {"cancelled": cancelled, "skipped": skipped}


#: How long claim_undispatched waits for rows another transaction holds.
CLAIM_WAIT_S = 5.0
#: Postgres's SQLSTATE for a lock not taken within lock_timeout.
LOCK_NOT_AVAILABLE = "55P03"


async def claim_undispatched(session: AsyncSession, job_ids: list[uuid.UUID], *,
                             wait_s: float = CLAIM_WAIT_S) -> list[Job]:
    """Those of these jobs still queued and unsent, locked so the relay cannot send them at the same time.

    A job another transaction holds is waited for (up to `wait_s`), then checked again: one the relay sent
    meanwhile is left out. Skipping it at once instead left it to the relay whoever held it: a second `hostq jobs
    retry` running at the same time holds the first one's jobs a moment (its own select locks rows that stopped
    matching), and 1,800 of 2,000 retried jobs waited for the relay. Rows still held after `wait_s` are left out
    (the relay sends them): the rest of the batch is claimed all the same."""
    stmt = (select(Job).where(Job.id.in_(job_ids), Job.status == rules.QUEUED, Job.dispatched_at.is_(None))
            .order_by(Job.id))
    try:
        async with session.begin_nested():  # SET LOCAL, and a lock timeout, end with the savepoint
            await session.execute(text(f"SET LOCAL lock_timeout = '{int(wait_s * 1000)}ms'"))
            jobs = list((await session.scalars(stmt.with_for_update())).all())
            await session.execute(text("SET LOCAL lock_timeout = DEFAULT"))
            return jobs
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
    return list((await session.scalars(stmt.with_for_update(skip_locked=True))).all())


def _parse_ids(values: Iterable[uuid.UUID | str]) -> tuple[list[uuid.UUID], list[Skipped]]:
    ids: list[uuid.UUID] = []
    skipped: list[Skipped] = []
    for value in values:
        job_id = value if isinstance(value, uuid.UUID) else parse_id(str(value))
        if job_id is None:
            skipped.append({"id": str(value), "reason": NOT_AN_ID})
        elif job_id not in ids:
            ids.append(job_id)
    return ids, skipped


async def _locked(session: AsyncSession, stmt: Select) -> dict[uuid.UUID, Job]:
    # Locks taken in id order, so two ops acting on overlapping sets cannot deadlock;
    # populate_existing so a job already in this session shows its current row.
    stmt = stmt.order_by(Job.id).with_for_update().execution_options(populate_existing=True)
    return {job.id: job for job in (await session.scalars(stmt)).all()}


async def _requeue(session: AsyncSession, job: Job) -> str | None:
    """A fresh round: attempts restart at 0; the JobAttempt rows of earlier rounds stay as history. Or why not
    (effects.requeue_refusal), and the job is left as it was.

    The last error stays on the row until the next attempt replaces or clears it.
    """
    reason = await effects.requeue_refusal(session, job)
    if reason:
        return reason
    job.status, job.round, job.attempts, job.updated_at = rules.QUEUED, job.round + 1, 0, datetime.now(timezone.utc)
    job.started_at = job.finished_at = job.next_attempt_at = job.dispatched_at = None
    await effects.on_requeued(session, job)
    # Sent after commit, like a newly recorded job (domain.jobs.service.record_job).
    session.info.setdefault(OUTBOX, []).append(job)
    return None
