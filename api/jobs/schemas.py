"""Job shapes of the public API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from domain.jobs.models import Job as JobRow
from domain.times import to_second


class JobError(msgspec.Struct):
    """Why the last attempt failed."""

    code: Annotated[str, msgspec.Meta(
        description="whm_unavailable (5xx, reset), whm_timeout, whm_rejected (WHM's result 0, with its reason), "
                    "whm_auth_failed, whm_tls_untrusted, whm_bad_response, whm_account_missing, "
                    "whm_username_taken, whm_domain_taken, whm_account_conflict (an operator must look), "
                    "whm_account_made_outside (WHM already has the order's username and domain, in an account hostq "
                    "did not create: an order does not take it over; an operator may adopt it), "
                    "whm_create_in_doubt (waiting for a timed-out createacct that may still be running on WHM), "
                    "username_unavailable (no free username found), kek_mismatch, worker_lost, interrupted, "
                    "dependency_unavailable (hostq's own database or Redis out of reach; retried), "
                    "invalid_state, not_found (the job's service no longer exists), internal_error",
        examples=["whm_unavailable"])]
    message: str


class JobResource(msgspec.Struct):
    """What the job works on."""

    type: Annotated[str, msgspec.Meta(examples=["service"])]
    id: uuid.UUID


class Job(msgspec.Struct):
    """A piece of background work and its honest status."""

    id: uuid.UUID
    kind: Annotated[str, msgspec.Meta(examples=["provision.create"])]
    status: Annotated[str, msgspec.Meta(
        description="queued, running or retrying (in flight); succeeded or cancelled (terminal); failed (terminal "
                    "until the operators retry it)", examples=["queued"])]
    attempts: Annotated[int, msgspec.Meta(examples=[1])]
    max_attempts: Annotated[int, msgspec.Meta(examples=[6])]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    next_attempt_at: Annotated[datetime, msgspec.Meta(description="When a retrying job runs again")] | None
    resource: JobResource | None
    error: Annotated[JobError, msgspec.Meta(
        description="Why the last failed attempt failed. Like Stripe's last_payment_error, it stays while the job "
                    "runs again (its next attempt, or a round ops retried) and is cleared when an attempt "
                    "succeeds")] | None
    result: Annotated[dict, msgspec.Meta(
        description="What the work did, once it succeeded: `outcome` (created, adopted, already_active, suspended, "
                    "unsuspended, plan_changed, removed, already_removed, nothing_to_remove, already_done) and its "
                    "details; a terminate that found no account but the name in use on WHM, after a createacct of "
                    "the service may have run, adds `leftover_user` (most likely a system user that call left "
                    "behind, for an operator to look at)")
    ] | None
    request_id: Annotated[str, msgspec.Meta(description="The X-Request-Id of the request that caused the job")] | None

    @classmethod
    def of(cls, row: JobRow) -> "Job":
        return cls(
            id=row.id, kind=row.kind, status=row.status, attempts=row.attempts, max_attempts=row.max_attempts,
            created_at=to_second(row.created_at), started_at=to_second(row.started_at),
            finished_at=to_second(row.finished_at),
            next_attempt_at=to_second(row.next_attempt_at, up=True),
            resource=JobResource(type=row.resource_type, id=row.resource_id) if row.resource_id else None,
            error=JobError(code=row.error_code, message=row.error_message or "") if row.error_code else None,
            result=row.result, request_id=row.request_id)


class JobList(msgspec.Struct):
    """A page of jobs, newest first."""

    data: list[Job]
    next_cursor: str | None
