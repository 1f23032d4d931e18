"""While a createacct that timed out may still be running on WHM, not finding its account proves nothing.

A terminate of a service whose create is in doubt (the job failed or was cancelled) must not conclude "nothing
to remove": the account would be left on the server, billed to nobody, its username and domain free for another
order. A create's retry that finds the name in use with no account yet must not conclude "a system user remains"
(a permanent failure asking an operator to remove it, while our own createacct is still making the account)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import update

from domain.db import session_scope
from domain.errors import IntegrationError, PermanentIntegrationError, TransientIntegrationError
from domain.jobs.models import Job, JobAttempt
from domain.provisioning import accounts
from domain.provisioning.actions import run_action
from domain.services.models import Service
from tests.integration.helpers import add_region, customer_and_plan, order_body
from workers.pg import SystemPool


class SlowWhm:
    """A WHM server whose timed-out createacct may or may not have made the account yet."""

    def __init__(self, account: dict | None = None, *, users: tuple[str, ...] = ()) -> None:
        self.account, self.removed, self.users = account, [], users  # users: system users without an account

    async def accountsummary(self, *, user=None, domain=None):
        return dict(self.account) if self.account and user == self.account["user"] else None

    async def verify_new_username(self, user: str) -> bool:
        return user not in self.users and not (self.account and user == self.account["user"])

    async def removeacct(self, username: str) -> None:
        self.removed.append(username)
        self.account = None


async def _failed_create_then_terminate(client, sessions, settings, sent_ago_s: float | None
                                       ) -> tuple[str, str, uuid.UUID]:
    """A service whose create failed `sent_ago_s` after its last createacct went out (None: WHM refused it, so
    nothing of ours can exist); its terminate job's id."""
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    order = (await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()
    service_id, username = order["service"]["id"], f"u{uuid.uuid4().hex[:7]}"
    sent = None if sent_ago_s is None else datetime.now(timezone.utc) - timedelta(seconds=sent_ago_s)
    async with session_scope(sessions) as session:
        await session.execute(update(Service).where(Service.id == uuid.UUID(service_id)).values(
            status="failed", username=username, create_attempted_at=sent))
        await session.execute(update(Job).where(Job.id == uuid.UUID(order["job"]["id"])).values(
            status="failed", error_code="whm_timeout", finished_at=datetime.now(timezone.utc)))
    terminate = await client.post(f"/v1/services/{service_id}/terminate")
    assert terminate.status_code == 202, terminate.text
    return service_id, username, uuid.UUID(terminate.json()["job"]["id"])


async def test_nothing_found_while_the_create_may_still_land_is_retried_with_a_code(client, sessions, settings):
    settles = 60.0
    service_id, username, job_id = await _failed_create_then_terminate(client, sessions, settings, sent_ago_s=5)
    with pytest.raises(TransientIntegrationError) as caught:
        await run_action(sessions, job_id, lambda server: SlowWhm(), create_settles_s=settles)
    assert caught.value.code == "whm_create_in_doubt"
    assert username in caught.value.message and "retry the job after that" in caught.value.message

    # WHM finished the create meanwhile: the next attempt finds the account and removes it.
    whm = SlowWhm({"user": username, "domain": (await _service(sessions, service_id)).domain, "suspended": 0})
    outcome = await run_action(sessions, job_id, lambda server: whm, create_settles_s=settles)
    assert whm.removed == [username] and outcome.result["outcome"] == "removed"


async def test_nothing_found_once_the_create_has_settled_is_nothing_to_remove(client, sessions, settings):
    _, _, job_id = await _failed_create_then_terminate(client, sessions, settings, sent_ago_s=61)
    outcome = await run_action(sessions, job_id, lambda server: SlowWhm(), create_settles_s=60.0)
    assert outcome.result["outcome"] == "nothing_to_remove" and "leftover_user" not in outcome.result


async def test_a_system_user_left_by_the_failed_create_is_named_in_the_result(client, sessions, settings, caplog):
    service_id, username, job_id = await _failed_create_then_terminate(client, sessions, settings, sent_ago_s=61)
    whm = SlowWhm(users=(username,))
    outcome = await run_action(sessions, job_id, lambda server: whm, create_settles_s=60.0)
    # removeacct cannot reach a bare system user: nothing is removed, but the result and the log say it remains
    assert whm.removed == [] and outcome.result == {"service_id": service_id, "outcome": "nothing_to_remove",
                                                    "leftover_user": username}
    assert f"no account {username!r} but the name is in use, most likely by a system user" in caplog.text


async def test_a_name_held_when_no_createacct_of_ours_went_out_is_not_called_a_leftover(client, sessions, settings):
    """WHM refused the create at once (a reserved name, another account's first 8 characters, a name made outside
    hostq): whatever holds the name is not ours, and no operator should remove it."""
    service_id, username, job_id = await _failed_create_then_terminate(client, sessions, settings, sent_ago_s=None)
    whm = SlowWhm(users=(username,))
    outcome = await run_action(sessions, job_id, lambda server: whm, create_settles_s=60.0)
    assert whm.removed == [] and outcome.result == {"service_id": service_id, "outcome": "nothing_to_remove"}


async def test_an_account_under_the_name_that_was_never_ours_is_left_alone(client, sessions, settings):
    """WHM refused the create (the name belongs to an account made outside hostq): not ours to remove, nor a
    conflict that would keep the service from ending."""
    service_id, username, job_id = await _failed_create_then_terminate(client, sessions, settings, sent_ago_s=None)
    whm = SlowWhm({"user": username, "domain": "someone-else.example", "suspended": 0})
    outcome = await run_action(sessions, job_id, lambda server: whm, create_settles_s=60.0)
    assert whm.removed == [] and outcome.result == {"service_id": service_id, "outcome": "nothing_to_remove"}


async def _service(sessions, service_id: str) -> Service:
    async with sessions() as session:
        return await session.get(Service, uuid.UUID(service_id))


class NameInUse:
    """A WHM still running an earlier createacct: the name's system user exists, its account not yet."""

    async def accountsummary(self, *, user=None, domain=None):
        return None

    async def createacct(self, *, username: str, **_) -> dict:
        raise PermanentIntegrationError("whm_account_exists",
                                        f"The username “{username}” is in use by an existing system user.")


@pytest.mark.parametrize("sent_ago_s, code", [(5, "whm_create_in_doubt"), (61, "whm_username_taken")])
async def test_a_name_in_use_without_an_account_waits_while_the_earlier_create_may_run(
        client, sessions, settings, sent_ago_s, code):
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    order = (await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()
    service_id = uuid.UUID(order["service"]["id"])
    sent = datetime.now(timezone.utc) - timedelta(seconds=sent_ago_s)
    async with session_scope(sessions) as session:  # an earlier attempt's createacct timed out sent_ago_s ago
        await session.execute(update(Service).where(Service.id == service_id).values(
            username=f"u{uuid.uuid4().hex[:7]}", create_attempted_at=sent))
    pool = SystemPool(settings.database_url, max_size=1)
    try:
        db = await pool.get()
        with pytest.raises(IntegrationError) as caught:
            await accounts.create_account(db, await db.fetchrow(accounts.LOAD_SERVICE, service_id),
                                          lambda server: NameInUse(), create_settles_s=60.0)
    finally:
        await pool.close()
    assert caught.value.code == code
    assert caught.value.retryable == (code == "whm_create_in_doubt"), caught.value.message
    # This attempt's createacct, refused at once, moved no window: the earlier one's is still the one that counts
    # (were it moved, the job's last attempt, waiting for the earlier window, would find the doubt again).
    assert (await _service(sessions, str(service_id))).create_attempted_at == sent



@pytest.mark.parametrize("earlier, outcome", [
    (["whm_create_in_doubt", "whm_create_in_doubt"], "nothing_to_remove"),  # they waited: none sent removeacct
    (["whm_create_in_doubt", "whm_timeout"], "already_removed"),  # that one may have, its answer lost
])
async def test_a_terminate_that_waited_out_the_doubt_says_what_it_found(client, sessions, settings, earlier, outcome):
    """The last attempt, after the settle time, finds no account: 'already_removed' only if an earlier attempt may
    have sent removeacct; attempts that waited for the doubt sent nothing."""
    service_id, username, job_id = await _failed_create_then_terminate(client, sessions, settings, sent_ago_s=61)
    now = datetime.now(timezone.utc)
    async with session_scope(sessions) as session:  # attempts 1 and 2 failed so; attempt 3 runs now
        for n, code in enumerate(earlier, 1):
            session.add(JobAttempt(job_id=job_id, round=1, attempt=n, started_at=now, finished_at=now,
                                   outcome="retrying", error_code=code, error_message="..."))
        session.add(JobAttempt(job_id=job_id, round=1, attempt=3, started_at=now))
        await session.execute(update(Job).where(Job.id == job_id).values(status="running", attempts=3))
    whm = SlowWhm(users=(username,))
    result = (await run_action(sessions, job_id, lambda server: whm, create_settles_s=60.0)).result
    assert whm.removed == [] and result["outcome"] == outcome
    # the name is held: named as a leftover when this terminate knows nothing of ours was removed
    assert result.get("leftover_user") == (username if outcome == "nothing_to_remove" else None)
