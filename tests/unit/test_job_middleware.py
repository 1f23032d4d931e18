"""JobStateMiddleware's bookkeeping between an attempt and its message's after_process_message."""

from __future__ import annotations

from types import SimpleNamespace

from workers import middleware
from workers.middleware import JobStateMiddleware


def _message(job_id: str) -> SimpleNamespace:
    return SimpleNamespace(options={"job_id": job_id, "retries": 2})


def test_a_failed_attempt_s_outcome_sets_its_message_s_retries_once():
    tracker = JobStateMiddleware(sessions=None, db=None)
    tracker._note_outcome("a", "retrying")
    tracker._note_outcome("b", "failed")
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
        tracker._note_outcome(job, "retrying")
    tracker._note_outcome("b", "failed")  # noted again: now the newest
    tracker._note_outcome("e", "retrying")
    assert list(tracker._outcomes) == ["d", "b", "e"] and tracker._outcomes["b"] == "failed"
