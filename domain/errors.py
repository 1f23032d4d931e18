"""Domain errors: what went wrong, in business terms, free of HTTP and Dramatiq.

    DomainError
    ├── NotFound            an id that does not exist, or belongs to another tenant
    ├── ValidationFailed    input breaks a rule (carries field errors)
    ├── Conflict            a unique thing already exists
    │   └── OutOfTurn       a job's attempt outlived its turn: another attempt of the job runs now
    ├── InvalidState        the resource's state does not allow the action
    ├── NoCapacity          no server with room in the region
    ├── Unavailable         a dependency (Postgres, Redis) is down
    └── Misconfigured       hostq's own configuration cannot serve the request (e.g. the wrong HOSTQ_KEK)
    IntegrationError        a remote system (WHM, PSP, mail) failed; carries a job error code
    ├── TransientIntegrationError   worth retrying later (timeouts, resets, 5xx)
    └── PermanentIntegrationError   retrying cannot help (bad package, auth failure, conflict)

`api/problems.py` maps DomainError to problem+json once; the job middleware
records IntegrationError codes on the job row.
"""

from __future__ import annotations

from datetime import datetime


class DomainError(Exception):
    """Base of the errors a use case raises on purpose."""

    code = "error"

    def __init__(self, detail: str = "", *, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class NotFound(DomainError):
    code = "not_found"


class ValidationFailed(DomainError):
    code = "validation_error"


class Conflict(DomainError):
    code = "conflict"


class OutOfTurn(Conflict):
    """A job's attempt outlived its turn (its worker only looked dead, so the job was started again elsewhere):
    it must not act on WHM any more. Raised before a call that would change an account; nothing is recorded."""

    code = "out_of_turn"


class InvalidState(DomainError):
    code = "invalid_state"


class NoCapacity(DomainError):
    code = "no_capacity"


class Unavailable(DomainError):
    code = "unavailable"


class Misconfigured(DomainError):
    """The deployment is set up wrong for this request; `detail` is for the operators' log, not for the caller."""

    code = "internal_error"


class IntegrationError(Exception):
    """A remote system failed; `code` is what the job row records.

    `message` is the reseller's to read (the job's error in the API); `detail`, what ops need beyond it that is
    not the reseller's to see (another WHM account's username or domain: another tenant's, maybe): only in the
    attempt's history (`hostq jobs show`) and the worker's log.
    """

    retryable = False
    settles_at: datetime | None = None

    def __init__(self, code: str, message: str, *, detail: str | None = None) -> None:
        super().__init__(f"{code}: {message}" + (f" ({detail})" if detail else ""))
        self.code = code
        self.message = message
        self.detail = detail


class TransientIntegrationError(IntegrationError):
    """`settles_at`: when a later attempt can tell for sure (a createacct in doubt can no longer land). Attempts
    before then may find the same doubt, so the job's last attempt waits for it (jobs.rules.last_attempt_waits)."""

    retryable = True

    def __init__(self, code: str, message: str, *, settles_at: datetime | None = None,
                 detail: str | None = None) -> None:
        super().__init__(code, message, detail=detail)
        self.settles_at = settles_at


class PermanentIntegrationError(IntegrationError):
    retryable = False
