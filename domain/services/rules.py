"""The service life cycle as a pure state machine."""

from __future__ import annotations

import calendar
from datetime import date

PENDING, PROVISIONING, ACTIVE, SUSPENDED, TERMINATED, FAILED = (
    "pending", "provisioning", "active", "suspended", "terminated", "failed")
STATUSES = (PENDING, PROVISIONING, ACTIVE, SUSPENDED, TERMINATED, FAILED)
BILLING_CYCLES = {"monthly": 1, "quarterly": 3, "semiannual": 6, "annual": 12}

# action -> (states it may start from, state while its job runs)
ACTIONS: dict[str, tuple[frozenset[str], str]] = {
    "provision": (frozenset({PENDING, FAILED}), PROVISIONING),
}
# Outcomes of a provisioning job.
PROVISIONED = {PROVISIONING: ACTIVE}


def can_start(action: str, status: str) -> bool:
    """Whether a service in `status` accepts `action`."""
    allowed, _ = ACTIONS[action]
    return status in allowed


def after_provisioned(status: str) -> str:
    """The state once WHM has the account."""
    if status not in (PROVISIONING, ACTIVE):
        raise ValueError(f"a {status} service cannot become active")
    return ACTIVE


def add_months(day: date, months: int) -> date:
    """`day` moved by whole months, clamped to the end of shorter months (Jan 31 + 1 = Feb 28)."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))
