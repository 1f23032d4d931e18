"""Job states, retry decisions, queue routing and error classification."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from domain.errors import (
    Conflict, DomainError, IntegrationError, InvalidState, NotFound, PermanentIntegrationError,
    TransientIntegrationError)
from domain.jobs import rules
from domain.jobs.rules import can_move, last_attempt_waits, outcome_after_error, queue_for, should_run
from domain.jobs.tracking import describe_error

ALLOWED = {
    ("queued", "running"), ("queued", "cancelled"),
    ("running", "running"), ("running", "succeeded"), ("running", "retrying"), ("running", "failed"),
    ("running", "cancelled"),
    ("retrying", "running"), ("retrying", "cancelled"),
    ("failed", "queued"), ("failed", "cancelled"),
}


@pytest.mark.parametrize("current", rules.STATUSES)
@pytest.mark.parametrize("target", rules.STATUSES)
def test_can_move_table(current, target):
    assert can_move(current, target) is ((current, target) in ALLOWED)


@pytest.mark.parametrize("current, target, allowed", [
    ("succeeded", "queued", False), ("succeeded", "failed", False), ("cancelled", "queued", False),
    ("failed", "queued", True), ("queued", "succeeded", False), ("queued", "failed", False),
    ("retrying", "succeeded", False),
])
def test_can_move_examples(current, target, allowed):
    assert can_move(current, target) is allowed


def test_terminal_states_go_nowhere():
    assert rules.TERMINAL == {"succeeded", "cancelled"}
    for status in rules.TERMINAL:
        assert not any(can_move(status, t) for t in rules.STATUSES)


def test_unknown_state_moves_nowhere():
    assert not can_move("exploded", "queued")


@pytest.mark.parametrize("status, runs", [
    ("queued", True), ("running", True), ("retrying", True),
    ("succeeded", False), ("failed", False), ("cancelled", False), ("bogus", False),
])
def test_should_run(status, runs):
    assert should_run(status) is runs


@pytest.mark.parametrize("retryable, attempt, max_attempts, outcome", [
    (True, 1, 6, "retrying"),
    (True, 5, 6, "retrying"),
    (True, 6, 6, "failed"),
    (True, 7, 6, "failed"),
    (True, 1, 1, "failed"),
    (False, 1, 6, "failed"),
    (False, 6, 6, "failed"),
])
def test_outcome_after_error(retryable, attempt, max_attempts, outcome):
    assert outcome_after_error(retryable, attempt, max_attempts) == outcome


@pytest.mark.parametrize("kind, region, queue", [
    ("provision.create", "us", "provisioning.us"),
    ("provision.create", "br-sp", "provisioning.br-sp"),
    ("provision.suspend", "eu", "provisioning.eu"),
    ("invoice.issue", None, "invoice"),
    ("dunning.run", "us", "dunning"),
])
def test_queue_for(kind, region, queue):
    assert queue_for(kind, region) == queue


@pytest.mark.parametrize("region", [None, ""])
def test_provision_without_region_raises(region):
    with pytest.raises(ValueError, match="region"):
        queue_for("provision.create", region)


@pytest.mark.parametrize("exc, code, message, retryable", [
    (TransientIntegrationError("whm_timeout", "createacct timed out"), "whm_timeout", "createacct timed out", True),
    (PermanentIntegrationError("whm_auth", "token refused"), "whm_auth", "token refused", False),
    (IntegrationError("psp_error", "boom"), "psp_error", "boom", False),
])
def test_describe_integration_errors_keep_code_and_retryable(exc, code, message, retryable):
    error = describe_error(exc)
    assert (error.code, error.message, error.retryable) == (code, message, retryable)


@pytest.mark.parametrize("exc, code, message", [
    (NotFound("service 42 not found"), "not_found", "service 42 not found"),
    (InvalidState("service is active"), "invalid_state", "service is active"),
    (Conflict(), "conflict", "conflict"),
    (DomainError("plain"), "error", "plain"),
])
def test_describe_domain_errors_are_not_retried(exc, code, message):
    error = describe_error(exc)
    assert (error.code, error.message, error.retryable) == (code, message, False)


def test_describe_unknown_exception_is_internal_retryable_and_names_only_the_type():
    try:
        {}["secret-password-in-key"]
    except KeyError as exc:
        error = describe_error(exc)
    assert error.code == "internal_error"
    assert error.retryable is True
    assert error.message == "unexpected KeyError"
    assert "secret-password" not in error.message and "Traceback" not in error.message


def test_describe_custom_exception_type_name():
    class DiskOnFire(RuntimeError):
        pass

    error = describe_error(DiskOnFire("/var/lib/postgres at 100% for user admin:hunter2"))
    assert error.message == "unexpected DiskOnFire"
    assert "hunter2" not in error.message


def test_describe_an_interrupted_attempt_as_retryable():
    error = describe_error(asyncio.CancelledError())  # what the attempt sees when Dramatiq's time limit hits
    assert (error.code, error.retryable) == ("interrupted", True)
    assert "time limit" in error.message


def test_the_known_kinds_are_exactly_the_workers_actors():
    # In a process of its own, as a worker imports them: a new actor whose kind is missing from KINDS would make
    # `GET /v1/jobs?kind=` refuse it.
    code = "import json, dramatiq, workers.main; print(json.dumps(sorted(dramatiq.get_broker().get_declared_actors())))"
    env = {**os.environ, "HOSTQ_NAMESPACE": f"kinds-{os.getpid()}"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, timeout=60)
    assert json.loads(out.stdout.splitlines()[-1]) == sorted(rules.KINDS)


def test_a_filter_naming_no_status_or_kind_is_refused_with_the_field():
    assert rules.filter_problem("failed", "provision.create") is None
    assert rules.filter_problem(None, None) is None
    assert rules.filter_problem("done", None)[0] == "status"
    field, message = rules.filter_problem(None, "provison.create")
    assert field == "kind" and "'provison.create'" in message and "provision.create" in message


NOW = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("attempt, max_attempts, settles_in_s, waits_s", [
    (5, 6, 600, 602),  # the next attempt is the last: it waits for the doubt to settle (and the margin)
    (4, 6, 600, None),  # attempts remain after the next one: the backoff as usual
    (6, 6, 600, None),  # no next attempt
    (1, 2, 30, 32),
    (5, 6, -1, None),  # settled already: the next attempt decides anyway
    (5, 6, None, None),  # not a doubt
])
def test_last_attempt_waits_for_a_doubt_to_settle(attempt, max_attempts, settles_in_s, waits_s):
    settles = None if settles_in_s is None else NOW + timedelta(seconds=settles_in_s)
    wait = last_attempt_waits(attempt, max_attempts, settles, NOW)
    assert wait == (None if waits_s is None else timedelta(seconds=waits_s))
