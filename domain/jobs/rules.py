"""Job states and the moves between them: pure rules."""

from __future__ import annotations

from datetime import datetime, timedelta

QUEUED, RUNNING, RETRYING, SUCCEEDED, FAILED, CANCELLED = (
    "queued", "running", "retrying", "succeeded", "failed", "cancelled")
STATUSES = (QUEUED, RUNNING, RETRYING, SUCCEEDED, FAILED, CANCELLED)
TERMINAL = frozenset({SUCCEEDED, CANCELLED})
#: Every kind of job there is an actor for (a unit test compares it with the actors a worker declares), so
#: that a filter naming another kind, a typo most likely, is refused rather than matching nothing.
KINDS = ("provision.create", "provision.suspend", "provision.unsuspend", "provision.terminate",
         "provision.change_plan")
IN_FLIGHT = frozenset({QUEUED, RUNNING, RETRYING})

_MOVES: dict[str, frozenset[str]] = {
    QUEUED: frozenset({RUNNING, CANCELLED}),
    # A worker killed mid-run comes back to the same message: running -> running.
    RUNNING: frozenset({RUNNING, SUCCEEDED, RETRYING, FAILED, CANCELLED}),
    RETRYING: frozenset({RUNNING, CANCELLED}),
    FAILED: frozenset({QUEUED, CANCELLED}),
    SUCCEEDED: frozenset(),
    CANCELLED: frozenset(),
}


def can_move(current: str, target: str) -> bool:
    """Whether a job in `current` may go to `target`."""
    return target in _MOVES.get(current, frozenset())


def should_run(status: str) -> bool:
    """Whether a delivered message for a job in this state should run its actor."""
    return status in (QUEUED, RUNNING, RETRYING)


def outcome_after_error(retryable: bool, attempt: int, max_attempts: int) -> str:
    """`retrying` while attempts remain for a retryable error, else `failed`."""
    return RETRYING if retryable and attempt < max_attempts else FAILED


#: How long after an error's settles_at the last attempt runs: clocks differ a little.
SETTLE_MARGIN = timedelta(seconds=2)


def last_attempt_waits(attempt: int, max_attempts: int, settles_at: datetime | None, now: datetime
                       ) -> timedelta | None:
    """How long the job's next attempt waits, when it is the last and the failure only settles at `settles_at`.

    The backoff spends a job's attempts within minutes; a doubt (a createacct that may still land) can last
    longer. Attempts before the last keep their backoff (the doubt may clear sooner); the last waits for it to
    settle, so that it decides instead of failing the job with the same doubt. None: the backoff as usual.
    """
    if settles_at is None or attempt != max_attempts - 1 or settles_at <= now:
        return None
    return settles_at - now + SETTLE_MARGIN


def queue_for(kind: str, region: str | None = None) -> str:
    """The broker queue of a job kind: provisioning is per region, the rest by area."""
    area = kind.split(".", 1)[0]
    if area == "provision":
        if not region:
            raise ValueError("provisioning jobs need a region")
        return f"provisioning.{region}"
    return area


def filter_problem(status: str | None, kind: str | None) -> tuple[str, str] | None:
    """(field, message) when a jobs filter names a status or kind that does not exist."""
    if status is not None and status not in STATUSES:
        return "status", f"unknown status {status!r}: one of {', '.join(STATUSES)}"
    if kind is not None and kind not in KINDS:
        return "kind", f"unknown kind {kind!r}: one of {', '.join(KINDS)}"
    return None
