"""Keeping the job row honest while a worker runs it: start, succeed, fail, retry."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.errors import DomainError, IntegrationError
from domain.jobs import effects, rules
from domain.jobs.models import Job, JobAttempt


@dataclass(frozen=True, slots=True)
class JobError:
    """What the job row records of a failed attempt."""

    code: str
    message: str
    retryable: bool


def describe_error(exc: BaseException) -> JobError:
    """Classify an exception once: integration errors carry their code, the rest are internal."""
    if isinstance(exc, IntegrationError):
        return JobError(exc.code, exc.message, exc.retryable)
    if isinstance(exc, DomainError):
        return JobError(exc.code, exc.detail or exc.code, False)
    # Unknown failures are retried; the message names the type only, never a trace.
    return JobError("internal_error", f"unexpected {type(exc).__name__}", True)


def _now() -> datetime:
    return datetime.now(timezone.utc)


WORKER_LOST = JobError("worker_lost", "the worker running this attempt stopped (killed or crashed)", True)


async def start_attempt(session: AsyncSession, job_id: uuid.UUID) -> Job | None:
    """Mark the job running and open an attempt; None when the job should not run.

    A job found `running` was redelivered because its worker died mid-attempt: that attempt is closed
    as lost and counts, so a job that keeps killing its worker ends `failed` instead of looping.
    """
    job = await session.scalar(select(Job).where(Job.id == job_id).with_for_update())
    if job is None or not rules.should_run(job.status):
        return None
    if job.status == rules.RUNNING:
        outcome = rules.outcome_after_error(True, job.attempts, job.max_attempts)
        await _close_attempt(session, job, outcome, WORKER_LOST)
        if outcome == rules.FAILED:
            job.status, job.error_code, job.error_message = rules.FAILED, WORKER_LOST.code, WORKER_LOST.message
            job.finished_at = job.updated_at = _now()
            await effects.on_failed(session, job)
            return None
    now = _now()
    job.status, job.attempts, job.next_attempt_at, job.updated_at = rules.RUNNING, job.attempts + 1, None, now
    job.started_at = job.started_at or now
    session.add(JobAttempt(job_id=job.id, round=job.round, attempt=job.attempts, started_at=now))
    return job


async def _close_attempt(session: AsyncSession, job: Job, outcome: str, error: JobError | None) -> None:
    await session.execute(
        update(JobAttempt)
        .where(JobAttempt.job_id == job.id, JobAttempt.round == job.round, JobAttempt.attempt == job.attempts,
               JobAttempt.finished_at.is_(None))
        .values(finished_at=_now(), outcome=outcome, error_code=error.code if error else None,
                error_message=error.message if error else None))


async def finish_success(session: AsyncSession, job_id: uuid.UUID, result: dict | None) -> None:
    """The attempt worked: the job is succeeded with its result."""
    job = await session.scalar(select(Job).where(Job.id == job_id).with_for_update())
    if job is None or job.status != rules.RUNNING:
        return
    now = _now()
    job.status, job.result, job.finished_at, job.updated_at = rules.SUCCEEDED, result, now, now
    job.error_code = job.error_message = None
    await _close_attempt(session, job, rules.SUCCEEDED, None)


async def finish_error(session: AsyncSession, job_id: uuid.UUID, error: JobError) -> str | None:
    """The attempt failed: `retrying` while attempts remain for a retryable error, else `failed`."""
    job = await session.scalar(select(Job).where(Job.id == job_id).with_for_update())
    if job is None or job.status != rules.RUNNING:
        return None
    outcome = rules.outcome_after_error(error.retryable, job.attempts, job.max_attempts)
    now = _now()
    job.status, job.error_code, job.error_message, job.updated_at = outcome, error.code, error.message, now
    if outcome == rules.FAILED:
        job.finished_at = now
        await effects.on_failed(session, job)
    await _close_attempt(session, job, outcome, error)
    return outcome


async def note_next_attempt(session: AsyncSession, job_id: uuid.UUID, delay_ms: int) -> None:
    """Record when the broker will deliver the job's next attempt."""
    await session.execute(update(Job).where(Job.id == job_id, Job.status == rules.RETRYING)
                          .values(next_attempt_at=_now() + timedelta(milliseconds=delay_ms)))
