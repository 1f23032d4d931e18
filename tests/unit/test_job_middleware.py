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


def test_postgres_or_redis_out_of_reach_and_a_time_limit_lose_dramatiq_s_traceback_recorded_or_not():
    """Every delivery of every job meets the outage: a traceback each would flood the log (about 75 lines each)."""
    from dramatiq.middleware import TimeLimitExceeded
    tracker = JobStateMiddleware(sessions=None, db=None)
    assert tracker._keeps(_dramatiq_record(_message("b"), ConnectionRefusedError(111, "Connect call failed"))) is False
    assert tracker._keeps(_dramatiq_record(_message("b"), TimeLimitExceeded())) is False
    assert tracker._keeps(_dramatiq_record(_message("b"), ValueError("a bug"))) is True


def test_an_unrecorded_attempt_s_outage_is_one_line_and_its_retry_is_watched_for_the_relay(caplog):
    """The attempt failed before the job row knew of it (Redis timed out taking the service's lock): if Retries
    cannot send the message back either, before_ack must hand the job to the relay, or it waits for the stalled
    sweep (10 minutes) in `queued`."""
    tracker = JobStateMiddleware(sessions=None, db=None)
    message = _message("c")
    with caplog.at_level(logging.WARNING, logger="hostq.worker"):
        tracker.after_process_message(None, message, exception=TimeoutError())
    assert [r.getMessage() for r in caplog.records] == [
        "job c: its attempt could not start or be recorded: TimeoutError; the message is sent again"]
    tracker.before_enqueue(None, message, 1000)  # Retries' send of its retry
    assert tracker._retry_sends == {"m-c": "c"}  # before_ack hands it to the relay unless after_enqueue clears it
    tracker.after_enqueue(None, message, 1000)
    assert tracker._retry_sends == {}


def test_errors_are_named_for_the_job_row():
    from dramatiq.middleware import TimeLimitExceeded

    from domain.jobs.tracking import describe_error
    assert middleware._describe(TimeLimitExceeded()).code == "interrupted"
    down = describe_error(ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"))
    assert (down.code, down.retryable) == ("dependency_unavailable", True)
    assert "5432" in down.message
    assert describe_error(KeyError("x")).code == "internal_error"


def test_a_failed_job_is_one_line_without_dramatiq_s_retries_exceeded(caplog):
    """hostq's ERROR line says the job failed and why; Retries' "Retries exceeded for message" after it repeated
    it without the job (and said so of a job failed at once, which had exceeded nothing). Retries' line about a
    message whose attempts were never recorded (its backstop) stays: nothing else says it."""
    from dramatiq.middleware import Retries
    tracker, retries = JobStateMiddleware(sessions=None, db=None), Retries(max_retries=5)
    broker = SimpleNamespace(get_actor=lambda name: SimpleNamespace(options={}))
    tracker.before_worker_boot(broker, None)
    try:
        tracker._note_outcome("b", _failed("failed"))
        failed = SimpleNamespace(**vars(_message("b")), actor_name="provision.create", fail=lambda: None)
        backstop = SimpleNamespace(message_id="m-x", actor_name="provision.create", fail=lambda: None,
                                   options={"job_id": "x", "retries": 5})
        with caplog.at_level(logging.INFO):
            for message in (failed, backstop):
                try:
                    raise RuntimeError("boom")
                except RuntimeError as exc:
                    tracker.after_process_message(broker, message, exception=exc)
                    retries.after_process_message(broker, message, exception=exc)
    finally:
        tracker.after_worker_shutdown(broker, None)
    lines = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert ("hostq.worker", "ERROR", "job b (provision.create): attempt 2 of 3 failed: whm_unavailable: WHM "
            "answered 503; the job is failed (no attempts left)") in lines, lines
    assert not any("'m-b'" in message for _, _, message in lines), lines
    assert (middleware.RETRIES_LOGGER, "WARNING", "Retries exceeded for message 'm-x'.") in lines, lines
