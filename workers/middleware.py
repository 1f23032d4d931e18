"""The Dramatiq middleware that keeps each job row honest and runs one action at a time per service."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Coroutine

import dramatiq
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.middleware import SkipMessage

from domain.db import session_scope
from domain.jobs import rules, tracking
from workers.locks import RedisLock

#: How long a message waits before trying again when its service is busy with another action.
BUSY_DELAY_MS = (500, 2000)


class JobStateMiddleware(dramatiq.Middleware):
    """Writes each attempt's start and outcome to the job row, and decides whether Retries retries.

    Before an attempt it takes the lock of the job's resource (a service): when another action holds
    it, the message is put back with a short delay and skipped, which costs no attempt. It must sit
    after Retries in the middleware list: Dramatiq calls `after_*` hooks in reverse, so this one
    decides (by setting the message's max_retries) before Retries acts on it.

    `db` gives the worker's SystemPool (workers/pg.py) for the common moves, `sessions` the ORM's
    sessionmaker for the rare ones (domain/jobs/tracking.py); both are called on the event loop thread.
    Each hook is one trip to that thread: lock and start together, finish and unlock together.
    """

    def __init__(self, sessions: Callable, db: Callable, locks: Callable[[str, str], RedisLock] | None = None,
                 renew_every_s: float = 10.0) -> None:
        self._sessions, self._db, self._locks, self._renew_every_s = sessions, db, locks, renew_every_s
        self._held: dict[str, tuple[RedisLock, asyncio.Task]] = {}

    @staticmethod
    def _run(coro: Coroutine) -> object:
        return get_event_loop_thread().run_coroutine(coro)

    async def _in_session(self, work: Callable) -> object:
        async with session_scope(self._sessions()) as session:
            return await work(session)

    @staticmethod
    def _job_id(message: dramatiq.Message) -> uuid.UUID | None:
        value = message.options.get("job_id")
        return uuid.UUID(value) if value else None

    @staticmethod
    def _key(message: dramatiq.Message) -> str:
        return f"{message.message_id}:{message.options.get('redis_message_id')}"

    async def _lock(self, broker, message: dramatiq.Message) -> bool:
        """Take the resource's lock (and start renewing it); False while a live worker holds it."""
        resource = message.options.get("resource_id")
        if self._locks is None or not resource:
            return True
        lock = self._locks(resource, getattr(broker, "broker_id", ""))
        heartbeats = f"{getattr(broker, 'namespace', 'dramatiq')}:__heartbeats__"
        dead_before = int(time.time() * 1000) - getattr(broker, "heartbeat_timeout", 60_000)
        if not await lock.acquire_unless_alive(heartbeats, dead_before):
            return False
        self._held[self._key(message)] = (lock, asyncio.ensure_future(lock.keep(self._renew_every_s)))
        return True

    async def _unlock(self, message: dramatiq.Message) -> None:
        held = self._held.pop(self._key(message), None)
        if held is not None:
            lock, renewer = held
            renewer.cancel()
            await lock.release()

    async def _begin(self, broker, message: dramatiq.Message, job_id: uuid.UUID) -> bool | None:
        """None when the service is busy; False when the job should not run; True once its attempt started."""
        if not await self._lock(broker, message):
            return None
        try:
            if await tracking.start_fresh(await self._db().get(), job_id) is not None:
                return True
            if await self._in_session(lambda s: tracking.start_attempt(s, job_id)) is not None:
                return True
        except BaseException:
            await self._unlock(message)
            raise
        await self._unlock(message)  # done, cancelled, failed or unknown: a duplicate or stale delivery
        return False

    async def _end(self, message: dramatiq.Message, job_id: uuid.UUID, result, exception) -> str | None:
        """Record the attempt's outcome (None after a success), then let go of the lock."""
        try:
            if exception is None:
                await tracking.finish_success(await self._db().get(), job_id, result if isinstance(result, dict) else None)
                return None
            error = tracking.describe_error(exception)
            return await self._in_session(lambda s: tracking.finish_error(s, job_id, error))
        finally:
            await self._unlock(message)

    def before_process_message(self, broker, message):
        job_id = self._job_id(message)
        if job_id is None:
            return
        started = self._run(self._begin(broker, message, job_id))
        if started is None:  # busy with another action: come back soon, no attempt spent
            broker.enqueue(message.copy(), delay=random.randint(*BUSY_DELAY_MS))
            raise SkipMessage(f"job {job_id}: its service is busy")
        if not started:
            raise SkipMessage(f"job {job_id} does not need to run")

    def after_process_message(self, broker, message, *, result=None, exception=None):
        job_id = self._job_id(message)
        if job_id is None:
            return
        outcome = self._run(self._end(message, job_id, result, exception))
        if exception is not None:
            # Postgres decides; Retries only schedules: no retry once the job row says failed.
            retries = message.options.get("retries", 0)
            message.options["max_retries"] = retries + 1 if outcome == rules.RETRYING else 0

    def after_skip_message(self, broker, message):
        if self._key(message) in self._held:
            self._run(self._unlock(message))

    def before_enqueue(self, broker, message, delay):
        job_id = self._job_id(message)
        if job_id is not None and delay:
            self._run(self._noted(job_id, delay))

    async def _noted(self, job_id: uuid.UUID, delay: int) -> None:
        await tracking.note_next_attempt(await self._db().get(), job_id, delay)
