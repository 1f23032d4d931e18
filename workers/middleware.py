"""The Dramatiq middleware that keeps each job row honest: running, succeeded, retrying, failed."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import dramatiq
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.middleware import SkipMessage

from domain.db import session_scope
from domain.jobs import rules, tracking


class JobStateMiddleware(dramatiq.Middleware):
    """Writes each attempt's start and outcome to the job row, and decides whether Retries retries.

    It must sit after Retries in the middleware list: Dramatiq calls `after_*` hooks in reverse, so
    this one decides (by setting the message's max_retries) before Retries acts on it.
    """

    def __init__(self, sessions: Callable) -> None:
        self._sessions = sessions

    def _run(self, work: Callable) -> object:
        async def go():
            async with session_scope(self._sessions()) as session:
                return await work(session)
        return get_event_loop_thread().run_coroutine(go())

    @staticmethod
    def _job_id(message: dramatiq.Message) -> uuid.UUID | None:
        value = message.options.get("job_id")
        return uuid.UUID(value) if value else None

    def before_process_message(self, broker, message):
        job_id = self._job_id(message)
        if job_id is None:
            return
        job = self._run(lambda s: tracking.start_attempt(s, job_id))
        if job is None:  # done, cancelled, failed or unknown: a duplicate or stale delivery
            raise SkipMessage(f"job {job_id} does not need to run")

    def after_process_message(self, broker, message, *, result=None, exception=None):
        job_id = self._job_id(message)
        if job_id is None:
            return
        if exception is None:
            self._run(lambda s: tracking.finish_success(s, job_id, result if isinstance(result, dict) else None))
            return
        error = tracking.describe_error(exception)
        outcome = self._run(lambda s: tracking.finish_error(s, job_id, error))
        # Postgres decides; Retries only schedules: no retry once the job row says failed.
        retries = message.options.get("retries", 0)
        message.options["max_retries"] = retries + 1 if outcome == rules.RETRYING else 0

    def before_enqueue(self, broker, message, delay):
        job_id = self._job_id(message)
        if job_id is not None and delay:
            self._run(lambda s: tracking.note_next_attempt(s, job_id, delay))
