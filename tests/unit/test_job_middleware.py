"""JobStateMiddleware's bookkeeping between an attempt and its message's after_process_message."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from domain.errors import TransientIntegrationError
from domain.jobs.tracking import FailedAttempt, JobError
from workers import middleware
from workers.middleware import JobStateMiddleware

_ERROR = JobError("whm_unavailable", "WHM answered 503", True)


def _failed(status: str) -> FailedAttempt:
    return FailedAttempt(status, "provision.create", 2, 3, _ERROR, 1)


def _message(job_id: str) -> SimpleNamespace:
    return SimpleNamespace(message_id=f"m-{job_id}", options={"job_id": job_id, "retries": 2})


def test_a_failed_attempt_s_outcome_sets_its_message_s_retries_once():
    tracker = JobStateMiddleware(sessions=None, db=None)
    tracker._note_outcome("a", _failed("retrying"))
    tracker._note_outcome("b", _failed("failed"))
    retried, failed, unrecorded = _message("a"), _message("b"), _message("c")
    for message in (retried, failed, unrecorded):
        tracker.after_process_message(None, message, exception=RuntimeError("boom"))
    assert retried.options["max_retries"] == 3  # one more Dramatiq retry
    assert failed.options["max_retries"] == 0  # no more
    assert "max_retries" not in unrecorded.options  # never recorded: Dramatiq's own retries bring it back
    assert tracker._outcomes == {}


def test_outcomes_nobody_collects_are_dropped_oldest_first(monkeypatch):
    monkeypatch.setattr(middleware, "OUTCOMES_KEPT", 3)
    tracker = JobStateMiddleware(sessions=None, db=None)
    for job in "abcd":
        tracker._note_outcome(job, _failed("retrying"))
    tracker._note_outcome("b", _failed("failed"))  # noted again: now the newest
    tracker._note_outcome("e", _failed("retrying"))
    assert list(tracker._outcomes) == ["d", "b", "e"] and tracker._outcomes["b"].status == "failed"


def _dramatiq_record(message, exc: BaseException) -> logging.LogRecord:
    """Dramatiq's "Failed to process message %s with unhandled exception." record (dramatiq/worker.py)."""
    return logging.LogRecord(middleware.WORKER_THREAD_LOGGER, logging.ERROR, "worker.py", 594,
                             "Failed to process message %s with unhandled exception.", (message,),
                             (type(exc), exc, None))


def test_only_an_expected_failure_this_middleware_logs_loses_dramatiq_s_traceback():
    tracker = JobStateMiddleware(sessions=None, db=None)
    tracker._note_outcome("a", _failed("retrying"))
    transient = TransientIntegrationError("whm_timeout", "createacct timed out")
    assert tracker._keeps(_dramatiq_record(_message("a"), transient)) is False
    assert tracker._keeps(_dramatiq_record(_message("a"), KeyError("a bug"))) is True  # a bug keeps its traceback
    assert tracker._keeps(_dramatiq_record(_message("b"), transient)) is True  # not recorded: nothing else says it
    assert tracker._keeps(_dramatiq_record(SimpleNamespace(options={}), transient)) is True  # not a job's message
