"""The Dramatiq middleware that keeps each job row honest and runs one action at a time per service."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable

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
    """

    def __init__(self, sessions: Callable, locks: Callable[[str], RedisLock] | None = None,
                 renew_every_s: float = 10.0) -> None:
        self._sessions, self._locks, self._renew_every_s = sessions, locks, renew_every_s
        self._held: dict[str, tuple[RedisLock, object]] = {}

    def _run(self, work: Callable) -> object:
        async def go():
            async with session_scope(self._sessions()) as session:
                return await work(session)
        return get_event_loop_thread().run_coroutine(go())

    @staticmethod
    def _job_id(message: dramatiq.Message) -> uuid.UUID | None:
        value = message.options.get("job_id")
        return uuid.UUID(value) if value else None

    @staticmethod
    def _key(message: dramatiq.Message) -> str:
        return f"{message.message_id}:{message.options.get('redis_message_id')}"

    def _lock(self, broker, message: dramatiq.Message) -> bool:
        """Take the resource's lock (and start renewing it); False while a live worker holds it."""
        resource = message.options.get("resource_id")
        if self._locks is None or not resource:
            return True
        owner = getattr(broker, "broker_id", "")
        lock = self._locks(resource, owner)
        loop_thread = get_event_loop_thread()
        heartbeats = f"{getattr(broker, 'namespace', 'dramatiq')}:__heartbeats__"
        dead_before = int(time.time() * 1000) - getattr(broker, "heartbeat_timeout", 60_000)
        if not loop_thread.run_coroutine(lock.acquire_unless_alive(heartbeats, dead_before)):
            return False
        renewer = asyncio.run_coroutine_threadsafe(lock.keep(self._renew_every_s), loop_thread.loop)
        self._held[self._key(message)] = (lock, renewer)
        return True

    def _unlock(self, message: dramatiq.Message) -> None:
        held = self._held.pop(self._key(message), None)
        if held is not None:
            lock, renewer = held
            renewer.cancel()
            get_event_loop_thread().run_coroutine(lock.release())

    def before_process_message(self, broker, message):
        job_id = self._job_id(message)
        if job_id is None:
            return
        if not self._lock(broker, message):  # busy with another action: come back soon, no attempt spent
            broker.enqueue(message.copy(), delay=random.randint(*BUSY_DELAY_MS))
            raise SkipMessage(f"job {job_id}: its service is busy")
        job = self._run(lambda s: tracking.start_attempt(s, job_id))
        if job is None:  # done, cancelled, failed or unknown: a duplicate or stale delivery
            self._unlock(message)
            raise SkipMessage(f"job {job_id} does not need to run")

    def after_process_message(self, broker, message, *, result=None, exception=None):
        job_id = self._job_id(message)
        if job_id is None:
            return
        try:
            if exception is None:
                self._run(lambda s: tracking.finish_success(s, job_id, result if isinstance(result, dict) else None))
                return
            error = tracking.describe_error(exception)
            outcome = self._run(lambda s: tracking.finish_error(s, job_id, error))
            # Postgres decides; Retries only schedules: no retry once the job row says failed.
            retries = message.options.get("retries", 0)
            message.options["max_retries"] = retries + 1 if outcome == rules.RETRYING else 0
        finally:
            self._unlock(message)

    def after_skip_message(self, broker, message):
        self._unlock(message)

    def before_enqueue(self, broker, message, delay):
        job_id = self._job_id(message)
        if job_id is not None and delay:
            self._run(lambda s: tracking.note_next_attempt(s, job_id, delay))
