"""Keeping the job row honest while a worker runs it: start, succeed, fail, retry.

Every job takes the common moves (start a queued or retrying job, succeed): each is one plain statement on
the worker's asyncpg pool. The rare ones (a redelivered `running` job, a failure, which may change the
service too) go through the ORM, and start_attempt handles every state, the common ones included.
"""

from __future__ import annotations

import asyncio
import functools
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.errors import DomainError, IntegrationError, OutOfTurn
from domain.ids import new_id
from domain.jobs import effects, rules
from domain.jobs.models import Job, JobAttempt
from domain.outages import describe, is_outage


@dataclass(frozen=True, slots=True)
class JobError:
    """What the job row records of a failed attempt (`detail`: what only its attempt's row and the log say)."""

    code: str
    message: str
    retryable: bool
    settles_at: datetime | None = None  # TransientIntegrationError.settles_at
    detail: str | None = None  # IntegrationError.detail

    @property
    def for_ops(self) -> str:
        """The message with its detail: the attempt's history and the worker's log."""
        return f"{self.message} (for ops: {self.detail})" if self.detail else self.message


@dataclass(frozen=True, slots=True)
class Ticket:
    """Which attempt a worker runs: its job, the job's round and the attempt's number in that round.

    Recording the attempt's outcome needs the job row to still be at that attempt. One that outlived its turn (its
    worker only looked dead: a pause, a partition, so its service's lock was taken over and the job started again
    elsewhere) then changes neither the job nor its resource; the attempt that took over records its own.
    """

    job_id: uuid.UUID
    round: int
    attempt: int


#: A condition for a statement that gives something back (a username) during an attempt: true only while the job
#: is still at that attempt ($n, $n+1, $n+2: a Ticket's job id, round and attempt; a NULL job id: no job, always).
#: FOR SHARE: the job's row is read as it is now, not as the statement's snapshot had it (the statement may have
#: waited for the row it changes meanwhile), and an attempt starting meanwhile waits for this statement's commit.
_IN_TURN = ("(${0}::uuid IS NULL OR EXISTS (SELECT FROM jobs WHERE id = ${0} AND status = 'running' "
           "AND round = ${1} AND attempts = ${2} FOR SHARE))")


def in_turn(first: int) -> str:
    """The condition (_IN_TURN) with its parameters from $first on."""
    return _IN_TURN.format(first, first + 1, first + 2)


def turn_args(ticket: Ticket | None) -> tuple:
    """The arguments of in_turn for `ticket` (None: outside any job)."""
    return (ticket.job_id, ticket.round, ticket.attempt) if ticket is not None else (None, None, None)


_STILL_IN_TURN = f"SELECT {in_turn(1)}"


async def ensure_turn(db: Any, ticket: Ticket | None) -> None:
    """Raise OutOfTurn unless the job is still at `ticket`'s attempt (None: outside any job, always in turn).

    Checked just before each call that changes a WHM account: an attempt that outlived its turn (a long pause, a
    partition) then does not act after the attempt that took over, or after a later job on the same service. WHM
    knows no fencing tokens, so this narrows the window to the call itself rather than closing it.
    """
    if ticket is not None and not await db.fetchval(_STILL_IN_TURN, *turn_args(ticket)):
        raise OutOfTurn(f"attempt {ticket.attempt} of round {ticket.round} outlived its turn: another attempt "
                        "of the job runs now, so this one does not call WHM")


@dataclass(frozen=True, slots=True)
class Outcome:
    """A result with what the job's success also changes: `completes` is an UPDATE of the resource ending in its
    WHERE clause, $1 the resource id and `args` from $2 on. It runs in the statement that records the success
    (finish_sql), so the two commit together or not at all."""

    result: dict
    completes: str
    args: tuple = ()


@dataclass(frozen=True, slots=True)
class FailedAttempt:
    """A failed attempt as the job row recorded it: `status` is retrying or failed."""

    status: str
    kind: str
    attempt: int
    max_attempts: int
    error: JobError
    round: int


#: An attempt stopped from outside: by its time limit, or by the worker shutting down.
INTERRUPTED = JobError("interrupted", "the attempt was interrupted (time limit or worker shutdown)", True)


def is_expected(exc: BaseException) -> bool:
    """Whether `exc` is a failure hostq classifies on purpose (a remote system's, a business rule's), not a bug."""
    return isinstance(exc, (IntegrationError, DomainError))


def describe_error(exc: BaseException) -> JobError:
    """Classify an exception once: integration errors carry their code, the rest are internal."""
    if isinstance(exc, IntegrationError):
        return JobError(exc.code, exc.message, exc.retryable, exc.settles_at, exc.detail)
    if isinstance(exc, DomainError):
        return JobError(exc.code, exc.detail or exc.code, False)
    if isinstance(exc, asyncio.CancelledError):  # Dramatiq's time limit, or the worker shutting down
        return INTERRUPTED
    if is_outage(exc):
        return JobError("dependency_unavailable", f"Postgres or Redis could not be reached ({describe(exc)})", True)
    # Unknown failures are retried; the message names the type only, never a trace.
    return JobError("internal_error", f"unexpected {type(exc).__name__}", True)


def _now() -> datetime:
    return datetime.now(timezone.utc)


WORKER_LOST = JobError("worker_lost", "this attempt ended without its outcome recorded: its worker stopped (killed or "
                       "crashed), or the database could not be reached when it ended", True)

#: A retrying job delivered up to this much before its next attempt is due still runs it: the delayed message's
#: due time and the job row's are taken a few milliseconds apart, and machines' clocks differ a little.
EARLY_MARGIN = timedelta(seconds=2)


@dataclass(frozen=True, slots=True)
class NotDue:
    """A retrying job delivered before its next attempt is due: a duplicate message (its broker's data lost and
    the job sent again, or a scheduler's first start on a new Redis). It should come back in `delay_ms`."""

    delay_ms: int


@dataclass(frozen=True, slots=True)
class StillRunning:
    """A job found `running` whose attempt's worker still runs it: a duplicate message, delivered while the
    service's lock was lost (its Redis key deleted). It should come back later, as when the service is busy."""

    worker: str


#: (worker, attempt's start, attempt) -> whether that worker may still be running that attempt: it beats, the attempt
#: is within its time limit, and did not end (workers/middleware.py).
StillRunningCheck = Callable[[str, datetime, "Ticket"], Awaitable[bool]]


# The common start (a queued job, or a retrying one whose next attempt is due) in one autocommitted statement:
# the UPDATE locks the row and re-checks the status after any wait, as start_attempt's SELECT ... FOR UPDATE does.
_STARTED = f"""
WITH job AS (
    UPDATE jobs SET status = 'running', attempts = attempts + 1, next_attempt_at = NULL, updated_at = $2,
                    started_at = coalesce(started_at, $2)
    WHERE id = $1 AND (status = 'queued' OR status = 'retrying' AND (
        next_attempt_at IS NULL OR next_attempt_at <= $2::timestamptz + interval '{EARLY_MARGIN.total_seconds():g} s'))
    RETURNING id, round, attempts),
attempt AS (
    INSERT INTO job_attempts (id, created_at, job_id, round, attempt, started_at, worker)
    SELECT $3, $2, id, round, attempts, $2, $4 FROM job
    RETURNING round, attempt)
"""
_PARAMETER = re.compile(r"\$(\d+)")


def _shifted(query: str, by: int) -> str:
    """`query` with its parameters renumbered ($1 -> $(1+by)), to run inside a statement that has `by` before it."""
    return _PARAMETER.sub(lambda m: f"${int(m.group(1)) + by}", query)


def start_sql(loads: str | None = None) -> str:
    """The start statement; with `loads` (a query of one row by $1, the resource id) it returns that row too.

    Its columns come after `hostq_round` and `hostq_attempt` (the attempt's Ticket, NULL when the job was not
    queued or retrying): one round trip starts the attempt and reads what the work needs. Parameters: job id,
    now, attempt id, the worker (its lock-holder id, or NULL), then the resource id.
    """
    if loads is None:
        return _STARTED + "SELECT round AS hostq_round, attempt AS hostq_attempt FROM attempt"
    return (_STARTED + "SELECT attempt.round AS hostq_round, attempt.attempt AS hostq_attempt, loaded.* "
            f"FROM (SELECT) AS one LEFT JOIN attempt ON true LEFT JOIN ({_shifted(loads, 4)}) AS loaded ON true")


_START_PLAIN = start_sql()


async def start_fresh(db: asyncpg.Connection | asyncpg.Pool, job_id: uuid.UUID, *, sql: str | None = None,
                      resource_id: uuid.UUID | None = None, worker: str | None = None) -> asyncpg.Record | None:
    """Start a queued job's attempt, or a due retrying job's next one, in one statement (`sql` from start_sql).

    Its row (`hostq_round`, `hostq_attempt`, then what `sql` loads), or None for any other state.
    None is not a verdict: the caller then runs start_attempt, which handles every state.
    """
    if sql is None:
        row = await db.fetchrow(_START_PLAIN, job_id, _now(), new_id(), worker)
    else:
        row = await db.fetchrow(sql, job_id, _now(), new_id(), worker, resource_id)
    return row if row is not None and row["hostq_attempt"] is not None else None


async def start_attempt(session: AsyncSession, job_id: uuid.UUID, worker: str | None = None,
                        still_running: StillRunningCheck | None = None) -> Job | NotDue | StillRunning | None:
    """Mark the job running and open an attempt (run by `worker`); None when the job should not run, NotDue or
    StillRunning when it should later.

    A job found `running` was redelivered because its worker died mid-attempt: that attempt is closed
    as lost and counts, so a job that keeps killing its worker ends `failed` instead of looping. Unless
    `still_running(worker, started_at, ticket)` says the attempt's worker still runs it (a duplicate message, come while
    the service's lock was lost): StillRunning. A retrying
    job is not started before its next attempt is due (less EARLY_MARGIN): the backoff holds.
    """
    job = await session.scalar(select(Job).where(Job.id == job_id).with_for_update())
    if job is None or not rules.should_run(job.status):
        return None
    if job.status == rules.RETRYING and job.next_attempt_at is not None:
        wait = job.next_attempt_at - _now()
        if wait > EARLY_MARGIN:
            return NotDue(int(wait.total_seconds() * 1000))
    if job.status == rules.RUNNING and still_running is not None:
        running = (await session.execute(select(JobAttempt.worker, JobAttempt.started_at).where(
            JobAttempt.job_id == job.id, JobAttempt.round == job.round, JobAttempt.attempt == job.attempts,
            JobAttempt.finished_at.is_(None)))).first()
        if running is not None and running.worker and await still_running(
                running.worker, running.started_at, Ticket(job.id, job.round, job.attempts)):
            return StillRunning(running.worker)
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
    session.add(JobAttempt(job_id=job.id, round=job.round, attempt=job.attempts, started_at=now, worker=worker))
    return job


async def _close_attempt(session: AsyncSession, job: Job, outcome: str, error: JobError | None) -> None:
    await session.execute(
        update(JobAttempt)
        .where(JobAttempt.job_id == job.id, JobAttempt.round == job.round, JobAttempt.attempt == job.attempts,
               JobAttempt.finished_at.is_(None))
        .values(finished_at=_now(), outcome=outcome, error_code=error.code if error else None,
                error_message=error.for_ops if error else None))


# Succeeded: the job row and its open attempt in one autocommitted statement (a CTE's UPDATE locks the row),
# only while the job is still at this attempt ($4, $5: its Ticket).
_JOB_SUCCEEDED = """
job AS (
    UPDATE jobs SET status = 'succeeded', result = $2, finished_at = $3, updated_at = $3,
                    error_code = NULL, error_message = NULL
    WHERE id = $1 AND status = 'running' AND round = $4 AND attempts = $5
    RETURNING id, round, attempts)"""
_FINISH_PARAMETERS = 5
_ATTEMPT_SUCCEEDED = """
UPDATE job_attempts a SET finished_at = $3, outcome = 'succeeded', error_code = NULL, error_message = NULL
FROM job WHERE a.job_id = job.id AND a.round = job.round AND a.attempt = job.attempts AND a.finished_at IS NULL"""


@functools.cache
def finish_sql(completes: str | None = None) -> str:
    """The success statement; with `completes` (an UPDATE of the resource ending in its WHERE clause, $1 the
    resource id, then its own arguments) it runs in the same one, and only when the job's own update does.

    Parameters: job id, result, now, the Ticket's round and attempt, then the resource id and the effect's
    arguments. The job's success and its effect on the resource (a service made active) then commit together.
    """
    if completes is None:
        return "WITH" + _JOB_SUCCEEDED + _ATTEMPT_SUCCEEDED
    # The effect only with the job's own success: an attempt that finishes after its job moved on (cancelled,
    # failed, requeued by ops, or started again while this attempt's worker looked dead) changes nothing.
    effect = f"{_shifted(completes, _FINISH_PARAMETERS)} AND EXISTS (SELECT FROM job)"
    return f"WITH{_JOB_SUCCEEDED},\ncompleted AS ({effect}){_ATTEMPT_SUCCEEDED}"


_FINISH_PLAIN = finish_sql()


async def finish_success(db: asyncpg.Connection | asyncpg.Pool, ticket: Ticket, result: dict | None, *,
                         sql: str | None = None, resource_id: uuid.UUID | None = None, args: tuple = ()) -> None:
    """The attempt worked: the job is succeeded with its result (nothing happens unless it is still running this
    attempt). `sql` from finish_sql, with `args` after the resource id."""
    if sql is None:
        await db.execute(_FINISH_PLAIN, ticket.job_id, result, _now(), ticket.round, ticket.attempt)
    else:
        await db.execute(sql, ticket.job_id, result, _now(), ticket.round, ticket.attempt, resource_id, *args)


async def finish_error(session: AsyncSession, ticket: Ticket, error: JobError) -> FailedAttempt | None:
    """The attempt failed: `retrying` while attempts remain for a retryable error, else `failed`.

    What was recorded, or None when the job was no longer running this attempt.
    """
    job = await session.scalar(select(Job).where(Job.id == ticket.job_id).with_for_update())
    if job is None or job.status != rules.RUNNING or (job.round, job.attempts) != (ticket.round, ticket.attempt):
        return None
    outcome = rules.outcome_after_error(error.retryable, job.attempts, job.max_attempts)
    now = _now()
    job.status, job.error_code, job.error_message, job.updated_at = outcome, error.code, error.message, now
    if outcome == rules.FAILED:
        job.finished_at = now
        await effects.on_failed(session, job)
    await _close_attempt(session, job, outcome, error)
    return FailedAttempt(outcome, job.kind, job.attempts, job.max_attempts, error, job.round)


async def hand_to_relay(db: asyncpg.Pool, job_id: uuid.UUID) -> bool:
    """A job whose message could not be sent back to the broker (a retry's, a BUSY or a NotDue one): mark it
    unsent, for the relay to send again (HOSTQ_RELAY_GRACE_S later, once the broker takes it; a retrying job's for
    when its next attempt is due). False when the job is neither queued nor retrying: it needs no message."""
    return await db.fetchval("UPDATE jobs SET dispatched_at = NULL, updated_at = now() "
                             "WHERE id = $1 AND status IN ('queued', 'retrying') RETURNING true", job_id) is not None


async def note_next_attempt(db: asyncpg.Pool, job_id: uuid.UUID, failed: FailedAttempt, delay_ms: int) -> None:
    """Record when the broker will deliver the job's next attempt, after the `failed` one (unless the job has
    moved on since: a later attempt's note is not overwritten by a late one)."""
    await db.execute("UPDATE jobs SET next_attempt_at = $2 WHERE id = $1 AND status = 'retrying' "
                     "AND round = $3 AND attempts = $4",
                     job_id, _now() + timedelta(milliseconds=delay_ms), failed.round, failed.attempt)
