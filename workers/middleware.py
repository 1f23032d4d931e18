"""Running a job's attempt honestly: one action at a time per service, and the job row always told.

A job's actor is declared with `job_actor`. Its coroutine is one attempt, on the AsyncIO middleware's
event loop, in one trip from the worker thread:

    take the service's lock    busy: come back in a moment (BUSY), no attempt spent
    start the attempt          the job row says it need not run: SKIPPED; not yet (a retrying job's duplicate
                               message, early): come back when it is due (NotDue)
    run the work               statements take a pooled connection each: none is held across WHM calls
    record the outcome         succeeded (with the work's Outcome on the resource, in the same statement), or
                               retrying/failed with the error's code; only while the job is still at this
                               attempt (its Ticket): one that outlived its turn records nothing
    let go of the lock         sent, not waited for (workers/locks.py LockKeeper)

JobStateMiddleware (the same object) then acts on the outcome in the worker thread, where Dramatiq decides
what happens to the message: it re-sends a BUSY message after a short delay and a NotDue one for when the
job's next attempt is due, and tells Retries whether to retry a failed attempt (Postgres decides, by the job's
attempts and the error's kind). Dramatiq acknowledges a message whether or not its re-send (or its retry's send)
reached the broker: when one did not, the job is marked unsent, for the relay. It must sit after
Retries in the middleware list: Dramatiq calls `after_*` hooks in reverse, so this one sets the message's
max_retries before Retries reads it.

It also writes the worker's one line about each failed attempt (`hostq.worker`): a WARNING with when the next
attempt is due, or an ERROR when the job is failed. For a failure hostq classified on purpose (an integration or
domain error) Dramatiq's own "Failed to process message ... with unhandled exception" and its traceback are
dropped: the failure is expected, and the line says all of it. So they are for Postgres or Redis out of reach
and for an attempt stopped by its time limit (domain/outages.py; an outage meets every delivery of every job, and
a traceback each flooded the log). A bug keeps Dramatiq's traceback.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import asyncpg
import dramatiq
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.middleware import Interrupt

from domain.db import session_scope
from domain.jobs import rules, tracking
from domain.outages import describe, is_outage
from domain.times import rfc3339
from workers.heartbeat import Holder
from workers.locks import LockKeeper, RedisLock

#: How long a message waits before trying again when its service is busy with another action.
BUSY_DELAY_MS = (500, 2000)
#: Beyond its time limit, how long an attempt may take to record its outcome: a job still `running` that much
#: after its attempt started has lost that attempt, whether or not its worker lives.
RECORDING_S = 60.0
#: Failed attempts' outcomes kept for their message's after_process_message (far more than attempts in flight).
OUTCOMES_KEPT = 1000
#: The logger of Dramatiq's "Failed to process message ... with unhandled exception" (dramatiq/worker.py).
WORKER_THREAD_LOGGER = "dramatiq.worker.WorkerThread"
#: The logger of Dramatiq's Retries middleware (dramatiq/middleware/retries.py).
RETRIES_LOGGER = "dramatiq.middleware.retries.Retries"

log = logging.getLogger("hostq.worker")


@dataclass(frozen=True, slots=True)
class Attempt:
    """What an attempt's work is given."""

    # The worker's pool (system scope): each statement takes a connection for its own round trip only, so an
    # attempt waiting minutes for createacct holds none, and threads beyond the pool's size do not wait.
    db: asyncpg.Pool
    job_id: uuid.UUID
    resource_id: uuid.UUID | None
    row: asyncpg.Record | None  # the row the actor `loads` (after its Ticket), None if the resource is gone
    ticket: tracking.Ticket  # which attempt this is: what it gives back is given only while it is still its turn


Work = Callable[[Attempt], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Statements:
    """An actor's start and success statements (domain/jobs/tracking.py), with what it loads and completes."""

    loads: str | None = None
    start: str | None = None
    finish: str | None = None

    @classmethod
    def of(cls, loads: str | None, completes: str | None) -> Statements:
        return cls(loads, tracking.start_sql(loads) if loads else None,
                   tracking.finish_sql(completes) if completes else None)


class Verdict(str):
    """An attempt that did not run its work: the actor returns one instead of a result."""


BUSY = Verdict("busy")  # another action holds the service's lock
SKIPPED = Verdict("skipped")  # the job is done, cancelled, failed or unknown: a duplicate or stale delivery

_UNRECORDED = object()  # the attempt failed before its outcome reached the job row


#: What starting an attempt gives: its Ticket and the row it loaded (`()` if none); None when the job should not
#: run; NotDue or StillRunning when it should later.
Started = tuple[tracking.Ticket, asyncpg.Record | tuple] | tracking.NotDue | tracking.StillRunning | None


class JobStateMiddleware(dramatiq.Middleware):
    """Runs attempts (`attempt`) and settles their messages (`after_process_message`).

    `db` gives the worker's SystemPool (workers/pg.py) for the common moves, `sessions` the ORM's
    sessionmaker for the rare ones (domain/jobs/tracking.py), `locks(resource, owner)` a RedisLock; all
    are called on the event loop thread. `holder(broker)` names this process as a lock's holder and where
    holders beat (workers/heartbeat.py), so that a dead holder's lock is taken over.
    """

    def __init__(self, sessions: Callable, db: Callable, locks: Callable[[str, str], RedisLock] | None = None,
                 renew_every_s: float = 10.0, holder: Callable[[dramatiq.Broker], Holder] = Holder.of_redis_broker,
                 longest_attempt_s: float = 900.0) -> None:
        self._sessions, self._db, self._locks, self._holder = sessions, db, locks, holder
        # how long after its start an attempt may still be running (its time limit, and time to record the outcome)
        self._longest_attempt = timedelta(seconds=longest_attempt_s + RECORDING_S)
        self._keeper = LockKeeper(renew_every_s)
        # the attempts this process is running: one of its own attempts not among them has ended (_still_running)
        self._live: set[tracking.Ticket] = set()
        # job id -> what the job row got from its failed attempt (None: the job had moved on), for
        # after_process_message. An attempt that outlived its time limit records its failure after that hook ran:
        # such leftovers are dropped, oldest first, beyond OUTCOMES_KEPT.
        self._outcomes: dict[str, tracking.FailedAttempt | None] = {}
        # (message id, FailedAttempt) of the retry this worker thread's Retries is about to send: logged with its
        # delay by before_enqueue.
        self._retrying = threading.local()
        # the id of the message whose job this worker thread just logged as failed (_log_final): Retries' own
        # "Retries exceeded" line about it, logged next from the same thread, is dropped (_not_said).
        self._said_final = threading.local()
        # message id -> job id of each retry being sent, until the broker took it (after_enqueue). One still here
        # when the consumer acknowledges its message was refused: Dramatiq logs that and acknowledges all the same.
        self._retry_sends: dict[str, str] = {}

    async def attempt(self, broker: dramatiq.Broker, job_id: uuid.UUID, resource_id: uuid.UUID | None,
                      work: Work, sql: Statements) -> object:
        """One attempt of the job, start to finish; its result, or BUSY or SKIPPED."""
        db = await self._db().get()
        if resource_id is None:  # a message sent before resource ids travelled as an argument
            resource_id = await db.fetchval("SELECT resource_id FROM jobs WHERE id = $1", job_id)
        holder = self._holder(broker)
        held = await self._lock(holder, resource_id)
        if held is None:
            return BUSY
        try:
            started = await self._start(holder, db, job_id, resource_id, sql, held)
            if started is None:
                return SKIPPED
            if isinstance(started, tracking.NotDue):
                return started
            if isinstance(started, tracking.StillRunning):
                log.info("job %s: delivered while its attempt still runs on worker %s (a duplicate message, and the "
                         "service's lock was lost): sent again for later", job_id, started.worker)
                return BUSY
            ticket, row = started
            self._live.add(ticket)
            try:
                return await self._run(Attempt(db, job_id, resource_id, row or None, ticket), work, sql, held)
            finally:
                self._live.discard(ticket)
        finally:
            if held is not True:
                self._keeper.let_go(held)

    async def _run(self, attempt: Attempt, work: Work, sql: Statements, held: RedisLock | bool) -> object:
        """The started attempt's work, and its outcome recorded in the job row."""
        ticket = attempt.ticket
        try:
            result = await work(attempt)
        except BaseException as exc:  # CancelledError too: a time limit or shutdown interrupted it
            failed = await self._or_say_ended(self._failed(ticket, exc), ticket, held)
            self._note_outcome(str(attempt.job_id), failed)
            if failed is not None and failed.status == rules.RETRYING and (wait := rules.last_attempt_waits(
                    failed.attempt, failed.max_attempts, failed.error.settles_at, datetime.now(timezone.utc))):
                # the last attempt waits for the doubt to settle: Retries takes a Retry's delay over its backoff
                raise dramatiq.Retry(str(exc), delay=int(wait.total_seconds() * 1000)) from exc
            raise
        finish, args = sql.finish, ()
        if isinstance(result, tracking.Outcome):
            finish, args, result = tracking.finish_sql(result.completes), result.args, result.result
        await self._or_say_ended(tracking.finish_success(
            attempt.db, ticket, result if isinstance(result, dict) else None, sql=finish,
            resource_id=attempt.resource_id, args=args), ticket, held)
        return result

    async def _or_say_ended(self, step: Awaitable, ticket: tracking.Ticket, held: RedisLock | bool):
        """What `step` gives, a step taken while the attempt is open in the job row (loading its resource,
        recording its outcome); when it fails (the database unreachable), the job row still says running: say in
        Redis that the attempt ended (_say_ended), then raise."""
        try:
            return await step
        except BaseException:
            if isinstance(held, RedisLock):
                await _say_ended(held, ticket, self._longest_attempt)
            raise

    def _note_outcome(self, job_id: str, outcome: tracking.FailedAttempt | None) -> None:
        self._outcomes.pop(job_id, None)  # re-inserted last: the dict's order is the age of its entries
        self._outcomes[job_id] = outcome
        while len(self._outcomes) > OUTCOMES_KEPT:
            del self._outcomes[next(iter(self._outcomes))]

    async def _lock(self, holder: Holder, resource_id: uuid.UUID | None) -> RedisLock | bool | None:
        """Take the resource's lock and keep it renewed; None while a live worker holds it, True if none is needed."""
        if self._locks is None or resource_id is None:
            return True
        lock = self._locks(str(resource_id), holder.owner)
        dead_before = int(time.time() * 1000) - holder.timeout_ms
        try:
            taken = await lock.acquire_unless_alive(holder.heartbeats_key, dead_before)
        except BaseException:
            # Redis may have taken it before the answer was lost (a timeout): let go, or the lock would stay
            # held by this live worker, renewed by nobody, until its TTL, and every action on the service wait
            self._keeper.let_go(lock)
            raise
        if not taken:
            return None
        self._keeper.hold(lock)
        return lock

    async def _start(self, holder: Holder, db: asyncpg.Pool, job_id: uuid.UUID, resource_id: uuid.UUID | None,
                     sql: Statements, held: RedisLock | bool) -> Started:
        """Start the attempt: its Ticket and the row it loads (`()` if none); None when the job should not run,
        NotDue or StillRunning when it should later.

        The common case is one statement that also loads the resource; every other state goes through the ORM.
        """
        row = await tracking.start_fresh(db, job_id, sql=sql.start, resource_id=resource_id, worker=holder.owner)
        if row is None:
            still_running = self._still_running(holder, held) if isinstance(held, RedisLock) else None
            async with session_scope(self._sessions()) as session:
                started = await tracking.start_attempt(session, job_id, holder.owner, still_running)
                if started is None or isinstance(started, (tracking.NotDue, tracking.StillRunning)):
                    return started
                ticket = tracking.Ticket(job_id, started.round, started.attempts)
            if not sql.loads:
                return ticket, ()
            return ticket, (await self._or_say_ended(db.fetchrow(sql.loads, resource_id), ticket, held) or ())
        ticket = tracking.Ticket(job_id, row["hostq_round"], row["hostq_attempt"])
        return ticket, (row if sql.loads and row["id"] is not None else ())  # id NULL: the resource is gone

    def _still_running(self, holder: Holder, lock: RedisLock) -> tracking.StillRunningCheck:
        """Whether a worker may still run an attempt it started then: the attempt is within its time limit, its
        worker beats (in the Redis of the locks), and it did not end unrecorded (_say_ended). This process knows
        its own attempts: one it is not running has ended, however it ended (its start failing halfway too)."""
        async def check(worker: str, started_at: datetime, ticket: tracking.Ticket) -> bool:
            if datetime.now(timezone.utc) - started_at > self._longest_attempt:
                return False
            if worker == holder.owner:
                return ticket in self._live
            beat = await lock.client.call("ZSCORE", holder.heartbeats_key, worker)
            if beat is None or float(beat) < time.time() * 1000 - holder.timeout_ms:
                return False
            return not await lock.client.call("EXISTS", _ended_key(lock, ticket))
        return check

    async def _failed(self, ticket: tracking.Ticket, exc: BaseException) -> tracking.FailedAttempt | None:
        """Record the failed attempt; what the job row got (None when it was no longer running this attempt)."""
        error = _describe(exc)
        async with session_scope(self._sessions()) as session:
            return await tracking.finish_error(session, ticket, error)

    def after_process_message(self, broker, message, *, result=None, exception=None):
        job_id = message.options.get("job_id")
        if job_id is None:
            return
        if result is BUSY:  # come back soon; waiting is not an attempt
            self._send_again(broker, message, random.randint(*BUSY_DELAY_MS))
        elif isinstance(result, tracking.NotDue):  # a duplicate, early: never lost, never ahead of the backoff
            log.info("job %s: delivered %.1f s before its next attempt is due (a duplicate message): sent again "
                     "for then", job_id, result.delay_ms / 1000)
            self._send_again(broker, message, result.delay_ms)
        if exception is None:
            return
        self._retrying.next = None
        outcome = self._outcomes.pop(job_id, _UNRECORDED)
        if outcome is _UNRECORDED:
            # The attempt failed before its job row knew of it (the service's lock), or recording failed too
            # (the database is down?): Dramatiq's retry brings the message back, and a job row still `running`
            # closes this attempt as lost when it does. The limit an earlier delivery set (one more retry than it
            # had) would make Retries drop it: the backstop decides again. If that retry cannot be sent (Redis
            # away), the job is handed to the relay (before_ack).
            message.options.pop("max_retries", None)
            self._retrying.next = (message.message_id, None)
            if _quiet(exception):  # Dramatiq's traceback was dropped (_keeps): this line says it
                log.warning("job %s: its attempt could not start or be recorded: %s; the message is sent again",
                            job_id, describe(exception))
            return
        retries = message.options.get("retries", 0)
        retrying = outcome is not None and outcome.status == rules.RETRYING
        message.options["max_retries"] = retries + 1 if retrying else 0
        if retrying:  # Retries sends it next, from this thread: before_enqueue logs it with its delay
            self._retrying.next = (message.message_id, outcome)
        else:
            _log_final(job_id, outcome, exception)
            self._said_final.message_id = message.message_id

    def _send_again(self, broker: dramatiq.Broker, message, delay_ms: int) -> None:
        """Send a message that did not run back to the broker for later. Dramatiq acknowledges it whatever happens
        here, so when the broker refuses, its job is handed to the relay."""
        try:
            broker.enqueue(message.copy(), delay=delay_ms)
        except Exception as exc:
            self._refused(message.options["job_id"], exc)

    def _refused(self, job_id: str, exc: BaseException | None) -> None:
        """The broker did not take a job's message back: hand the job to the relay (the stalled-job sweep if
        Postgres cannot be told either), and say so."""
        try:
            relayed = get_event_loop_thread().run_coroutine(self._hand_to_relay(uuid.UUID(job_id)))
        except Exception:  # Postgres too
            relayed = False
        why = f"{type(exc).__name__}: {exc}" if exc is not None else "see Dramatiq's error above"
        log.error("job %s: its message could not be sent back to the broker (%s): %s", job_id, why,
                  "the relay sends it again once the broker takes it" if relayed else
                  "the stalled-job sweep sends it again (HOSTQ_RESEND_STALLED_S)")

    async def _hand_to_relay(self, job_id: uuid.UUID) -> bool:
        return await tracking.hand_to_relay(await self._db().get(), job_id)

    def before_worker_boot(self, broker, worker):
        logging.getLogger(WORKER_THREAD_LOGGER).addFilter(self._keeps)
        logging.getLogger(RETRIES_LOGGER).addFilter(self._not_said)

    def before_worker_shutdown(self, broker, worker):
        loop = get_event_loop_thread()
        if loop is not None:  # let the last releases reach Redis before the loop stops
            loop.run_coroutine(self._keeper.drain())

    def after_worker_shutdown(self, broker, worker):
        logging.getLogger(WORKER_THREAD_LOGGER).removeFilter(self._keeps)
        logging.getLogger(RETRIES_LOGGER).removeFilter(self._not_said)

    def _not_said(self, record: logging.LogRecord) -> bool:
        """False for Retries' "Retries exceeded for message" about a job this middleware has just logged as
        failed, with its reason (a job failed at once, not retryable, had no retries to exceed). Its other
        records, and that line about a message whose attempts were never recorded, are kept."""
        said = getattr(self._said_final, "message_id", None)
        if said is None or record.args != (said,):
            return True
        self._said_final.message_id = None
        return False

    def _keeps(self, record: logging.LogRecord) -> bool:
        """False for Dramatiq's record of an expected failure of a job whose outcome this middleware logs itself.

        Dramatiq logs it before after_process_message runs, while the outcome is still noted.
        """
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not isinstance(record.args, tuple) or not record.args:
            return True
        job_id = getattr(record.args[0], "options", {}).get("job_id")  # the MessageProxy of "message %s"
        if job_id is None:
            return True
        return not (_quiet(exc) or (tracking.is_expected(exc) and job_id in self._outcomes))

    def before_enqueue(self, broker, message, delay):
        # Only Retries' send of a failed attempt's message sets when the next attempt is due: a BUSY or NotDue
        # message sent again leaves it (moving it up would let a duplicate run ahead of the backoff).
        retry = getattr(self._retrying, "next", None)
        if retry is None or retry[0] != message.message_id or not delay:
            return
        self._retrying.next = None
        job_id = message.options["job_id"]
        self._retry_sends[message.message_id] = job_id
        if retry[1] is None:  # an unrecorded attempt's: the job row has nothing to note
            return
        get_event_loop_thread().run_coroutine(self._noted(uuid.UUID(job_id), retry[1], delay))
        due = rfc3339(datetime.now(timezone.utc) + timedelta(milliseconds=delay), up=True)
        log.warning("%s; next attempt in %.1f s, at %s", _failed_attempt(job_id, retry[1]), delay / 1000, due)

    def after_enqueue(self, broker, message, delay):
        self._retry_sends.pop(message.message_id, None)

    def before_ack(self, broker, message):
        # Retries' send of this message's retry raised (Dramatiq logged it), and the message is acknowledged now
        if (job_id := self._retry_sends.pop(message.message_id, None)) is not None:
            self._refused(job_id, None)

    async def _noted(self, job_id: uuid.UUID, failed: tracking.FailedAttempt, delay: int) -> None:
        await tracking.note_next_attempt(await self._db().get(), job_id, failed, delay)


def _ended_key(lock: RedisLock, ticket: tracking.Ticket) -> str:
    return f"{lock.key}:ended:{ticket.job_id}:{ticket.round}:{ticket.attempt}"


async def _say_ended(lock: RedisLock, ticket: tracking.Ticket, longest: timedelta) -> None:
    """An attempt whose outcome could not be recorded (the database unreachable as it ended) is over all the same:
    say so beside its service's lock, so that its message's next delivery, on any worker, closes it as lost at once
    instead of waiting for it as one still running (JobStateMiddleware._still_running)."""
    try:
        await lock.client.call("SET", _ended_key(lock, ticket), "1", "PX", int(longest.total_seconds() * 1000))
    except Exception as exc:  # Redis too: the next delivery waits out the attempt's time limit instead
        log.warning("job %s: could not note in Redis that its unrecorded attempt %d ended (%s: %s)", ticket.job_id,
                    ticket.attempt, type(exc).__name__, exc)


def _quiet(exc: BaseException) -> bool:
    """A failure that is nobody's bug, whatever became of the attempt: Postgres or Redis out of reach, or the
    attempt stopped from outside (its time limit, a shutdown). Its one line says all of it, without a traceback."""
    return is_outage(exc) or isinstance(exc, Interrupt)


def _describe(exc: BaseException) -> tracking.JobError:
    return tracking.INTERRUPTED if isinstance(exc, Interrupt) else tracking.describe_error(exc)


def _failed_attempt(job_id: str, outcome: tracking.FailedAttempt) -> str:
    return (f"job {job_id} ({outcome.kind}): attempt {outcome.attempt} of {outcome.max_attempts} failed: "
            f"{outcome.error.code}: {outcome.error.for_ops}")


def _log_final(job_id: str, outcome: tracking.FailedAttempt | None, exception: BaseException) -> None:
    """The one line about an attempt after which the job is not retried."""
    if outcome is None:
        error = _describe(exception)
        log.warning("job %s: an attempt failed after the job had moved on (not retried): %s: %s", job_id,
                    error.code, error.for_ops)
    else:
        log.error("%s; the job is failed (%s)", _failed_attempt(job_id, outcome),
                  "no attempts left" if outcome.error.retryable else "not retryable")


def _tracker(broker: dramatiq.Broker) -> JobStateMiddleware:
    for middleware in broker.middleware:
        if isinstance(middleware, JobStateMiddleware):
            return middleware
    raise RuntimeError("the broker has no JobStateMiddleware: make it with workers.broker.setup_broker")


def job_actor(*, actor_name: str, queue_name: str, loads: str | None = None, completes: str | None = None,
              broker: dramatiq.Broker | None = None) -> Callable[[Work], dramatiq.Actor]:
    """Declare the actor of a job kind: its messages carry the job id (and the resource id, to lock).

    `loads`: a query of the resource's row by $1 (its id) whose columns include `id`, read in the same
    statement that starts the attempt (Attempt.row). `completes`: a statement on the resource ($1) run
    in the same statement that records the success, so both commit together.
    """
    sql = Statements.of(loads, completes)

    def declare(work: Work) -> dramatiq.Actor:
        target = broker or dramatiq.get_broker()
        tracker = _tracker(target)

        async def attempt(job_id: str, resource_id: str | None = None, service_id: str | None = None) -> object:
            resource = resource_id or service_id  # service_id: provision.create messages sent before 2026-11
            return await tracker.attempt(target, uuid.UUID(job_id), uuid.UUID(resource) if resource else None,
                                         work, sql)

        attempt.__name__ = attempt.__qualname__ = work.__name__
        attempt.__doc__ = work.__doc__
        return dramatiq.actor(attempt, actor_name=actor_name, queue_name=queue_name, broker=target)
    return declare
