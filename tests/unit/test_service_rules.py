"""The service life cycle and billing-period arithmetic."""

from __future__ import annotations

from datetime import date

import pytest

from domain.services import rules
from domain.services.rules import add_months, after_provisioned, can_start


@pytest.mark.parametrize("start, months, expected", [
    (date(2023, 1, 31), 1, date(2023, 2, 28)),
    (date(2024, 1, 31), 1, date(2024, 2, 29)),
    (date(2024, 3, 31), 1, date(2024, 4, 30)),
    (date(2024, 12, 15), 1, date(2025, 1, 15)),
    (date(2024, 12, 31), 2, date(2025, 2, 28)),
    (date(2024, 11, 30), 3, date(2025, 2, 28)),
    (date(2024, 2, 29), 12, date(2025, 2, 28)),
    (date(2024, 5, 10), 0, date(2024, 5, 10)),
    (date(2024, 8, 31), 6, date(2025, 2, 28)),
    (date(2024, 1, 15), 25, date(2026, 2, 15)),
    (date(2024, 3, 31), -1, date(2024, 2, 29)),
    (date(2024, 1, 10), -1, date(2023, 12, 10)),
])
def test_add_months(start, months, expected):
    assert add_months(start, months) == expected


def test_billing_cycles_in_months():
    assert rules.BILLING_CYCLES == {"monthly": 1, "quarterly": 3, "semiannual": 6, "annual": 12}


@pytest.mark.parametrize("status, allowed", [
    ("pending", True), ("failed", True),
    ("provisioning", False), ("active", False), ("suspended", False), ("terminated", False),
])
def test_can_start_provision(status, allowed):
    assert can_start("provision", status) is allowed


def test_every_status_is_covered_by_the_table_above():
    assert set(rules.STATUSES) == {"pending", "provisioning", "active", "suspended", "terminated", "failed"}


def test_unknown_action_is_an_error():
    with pytest.raises(KeyError):
        can_start("teleport", "pending")


@pytest.mark.parametrize("status", ["provisioning", "active"])
def test_after_provisioned_is_active(status):
    assert after_provisioned(status) == "active"


@pytest.mark.parametrize("status", ["pending", "suspended", "terminated", "failed"])
def test_after_provisioned_refuses_other_states(status):
    with pytest.raises(ValueError, match=status):
        after_provisioned(status)


@pytest.mark.parametrize("action, status, message", [
    ("unsuspend", "active", "cannot unsuspend an active service"),
    ("provision", "active", "cannot provision an active service"),
    ("provision", "suspended", "cannot provision a suspended service"),
    ("suspend", "pending", "cannot suspend a pending service"),
    ("suspend", "terminated", "cannot suspend a terminated service"),
    ("terminate", "terminated", "cannot terminate a terminated service"),
    ("change_plan", "terminated", "cannot change the plan of a terminated service"),
    ("change_plan", "failed", "cannot change the plan of a failed service"),
])
def test_a_refused_action_is_said_in_english(action, status, message):
    assert rules.refusal(action, status) == message


def test_every_action_and_status_makes_a_refusal_with_the_right_article():
    for action in rules.ACTIONS:
        for status in rules.STATUSES:
            article = "an" if status == "active" else "a"
            assert rules.refusal(action, status).endswith(f" {article} {status} service")


def test_after_provisioned_refusal_names_the_status_with_its_article():
    with pytest.raises(ValueError, match="^a suspended service cannot become active$"):
        after_provisioned("suspended")
