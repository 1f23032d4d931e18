"""The service life cycle as a pure state machine."""

from __future__ import annotations

import calendar
from datetime import date

PENDING, PROVISIONING, ACTIVE, SUSPENDED, TERMINATED, FAILED = (
    "pending", "provisioning", "active", "suspended", "terminated", "failed")
STATUSES = (PENDING, PROVISIONING, ACTIVE, SUSPENDED, TERMINATED, FAILED)
BILLING_CYCLES = {"monthly": 1, "quarterly": 3, "semiannual": 6, "annual": 12}



class Action:
    """What a request on a service starts: the states it is allowed from, its job kind, the state at once.

    `verb` is how a refusal names it, before the service: "cannot <verb> a terminated service".
    """

    def __init__(self, kind: str, allowed: frozenset[str], at_once: str | None = None, *, verb: str) -> None:
        self.kind, self.allowed, self.at_once, self.verb = kind, allowed, at_once, verb


ACTIONS: dict[str, Action] = {
    "provision": Action("provision.create", frozenset({PENDING, FAILED}), at_once=PROVISIONING, verb="provision"),
    "suspend": Action("provision.suspend", frozenset({ACTIVE}), verb="suspend"),
    "unsuspend": Action("provision.unsuspend", frozenset({SUSPENDED}), verb="unsuspend"),
    "terminate": Action("provision.terminate", frozenset({PENDING, ACTIVE, SUSPENDED, FAILED}), verb="terminate"),
    "change_plan": Action("provision.change_plan", frozenset({ACTIVE, SUSPENDED}), verb="change the plan of"),
}
# The state a service reaches when its action's job succeeds.
DONE = {"provision.create": ACTIVE, "provision.suspend": SUSPENDED, "provision.unsuspend": ACTIVE,
        "provision.terminate": TERMINATED}
SUSPEND_REASONS = ("reseller", "non_payment")
#: Why an erased customer (DELETE /v1/customers/{id}) gets no service on WHM again: erasure waited for their
#: services to end, and nothing may bring one back.
ERASED_CUSTOMER = "the customer's personal data was erased: no service of theirs can be ordered or provisioned"


def holds_place(status: str, create_attempted: bool) -> bool:
    """Whether a service counts toward its server's capacity (whm_servers.used; the trigger of migration 0012
    keeps the count by the same rule): while it is live, and while it is failed after a createacct that may have
    made its account (a retry adopts that account, a terminate removes it)."""
    return status in (PENDING, PROVISIONING, ACTIVE, SUSPENDED) or (status == FAILED and create_attempted)


def can_start(action: str, status: str) -> bool:
    """Whether a service in `status` accepts `action`."""
    return status in ACTIONS[action].allowed


def refusal(action: str, status: str) -> str:
    """Why a service in `status` refuses `action`, in English: "cannot change the plan of an active service"."""
    return f"cannot {ACTIONS[action].verb} {a_service(status)}"


def a_service(status: str) -> str:
    """`status` as a service, with its article: "a pending service", "an active service"."""
    return f"{'an' if status[:1] in 'aeiou' else 'a'} {status} service"


def after_provisioned(status: str) -> str:
    """The state once WHM has the account."""
    if status not in (PROVISIONING, ACTIVE):
        raise ValueError(f"{a_service(status)} cannot become active")
    return ACTIVE


def add_months(day: date, months: int) -> date:
    """`day` moved by whole months, clamped to the end of shorter months (Jan 31 + 1 = Feb 28)."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))
