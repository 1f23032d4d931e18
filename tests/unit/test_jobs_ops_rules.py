"""Which jobs ops may retry or cancel: pure decisions."""

from __future__ import annotations

import pytest

from domain.jobs.ops import cancel_refusal, retry_refusal
from domain.jobs.rules import STATUSES


@pytest.mark.parametrize("status", STATUSES)
def test_only_failed_jobs_can_be_retried(status):
    assert retry_refusal(status) == (None if status == "failed" else f"status is {status}")


@pytest.mark.parametrize("status", STATUSES)
def test_waiting_and_failed_jobs_can_be_cancelled_running_and_finished_cannot(status):
    cancellable = {"queued", "retrying", "failed"}
    assert cancel_refusal(status) == (None if status in cancellable else f"status is {status}")
