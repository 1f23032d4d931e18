"""The request id appended to worker log lines while a message is processed (workers/logcontext.py)."""

from __future__ import annotations

import logging

import dramatiq

from workers.logcontext import REQUEST_ID, RequestIdFilter, RequestIdLogContext


def _record(msg: str, *args) -> logging.LogRecord:
    return logging.LogRecord("dramatiq.worker", logging.WARNING, __file__, 1, msg, args, None)


def test_lines_logged_while_a_message_is_processed_carry_its_request_id_once():
    context, log_filter = RequestIdLogContext(), RequestIdFilter()
    message = dramatiq.Message(queue_name="q", actor_name="a", args=(), kwargs={},
                               options={"request_id": "req_abc"})
    context.before_process_message(None, message)
    record = _record("Retrying message %r in %d milliseconds.", "m1", 500)
    assert log_filter.filter(record) and log_filter.filter(record)  # a second handler adds nothing more
    assert record.getMessage() == "Retrying message 'm1' in 500 milliseconds. request_id=req_abc"
    context.after_process_message(None, message, exception=RuntimeError())
    after = _record("Worker has been shut down.")
    assert log_filter.filter(after) and after.getMessage() == "Worker has been shut down."
    assert REQUEST_ID.get() is None


def test_dramatiq_s_lines_about_an_outage_lose_their_traceback_and_name_the_error():
    import redis.exceptions

    from workers.logcontext import OutageWithoutTraceback
    log_filter = OutageWithoutTraceback()

    def failed(name: str, exc: BaseException) -> logging.LogRecord:
        return logging.LogRecord(name, logging.CRITICAL, __file__, 1, "Consumer encountered an unexpected error.",
                                 (), (type(exc), exc, None))

    down = failed("dramatiq.worker.ConsumerThread", redis.exceptions.TimeoutError("Timeout reading from socket"))
    assert log_filter.filter(down) and down.exc_info is None
    assert down.getMessage() == "Consumer encountered an unexpected error.: TimeoutError: Timeout reading from socket"
    bug = failed("dramatiq.worker.ConsumerThread", KeyError("a bug"))
    assert log_filter.filter(bug) and bug.exc_info is not None  # a bug keeps its traceback
    ours = failed("hostq.worker", ConnectionRefusedError(111, "refused"))
    assert log_filter.filter(ours) and ours.exc_info is not None  # only Dramatiq's own lines are touched
