"""Suspend, unsuspend, terminate and change plan on WHM: each checks WHM's state first, so a retry is safe."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.catalog.models import Plan
from domain.db import session_scope
from domain.errors import InvalidState, NotFound, PermanentIntegrationError, TransientIntegrationError
from domain.jobs.models import Job, JobAttempt
from domain.jobs.tracking import Outcome
from domain.provisioning.accounts import WhmPort, still_settling
from domain.provisioning.models import WhmServer
from domain.services import rules
from domain.services.models import Service
from domain.times import rfc3339

log = logging.getLogger("hostq.provisioning")


async def _load(sessions: async_sessionmaker[AsyncSession], job_id: uuid.UUID):
    async with session_scope(sessions) as session:
        job = await session.get(Job, job_id)
        service = await session.get(Service, job.resource_id) if job else None
        if service is None:
            raise NotFound("the job's service no longer exists")
        server = await session.get(WhmServer, service.server_id) if service.server_id else None
        return job, service, server


async def _account(whm: WhmPort, service: Service) -> dict | None:
    """Our account on WHM, None if absent; a conflict if the username now holds another domain."""
    found = await whm.accountsummary(user=service.username)
    if found is not None and str(found.get("domain", "")).lower() != service.domain:
        raise PermanentIntegrationError("whm_account_conflict", f"WHM's account {service.username!r} has another "
                                        f"domain, not {service.domain!r}: an operator must look",
                                        detail=f"its domain: {found.get('domain')!r}")
    return found


async def _existing_account(whm: WhmPort, service: Service) -> dict:
    """Our account on WHM; an error naming it when WHM has none (suspend, unsuspend, change plan need one)."""
    account = await _account(whm, service)
    if account is None:
        raise PermanentIntegrationError("whm_account_missing", f"WHM has no account {service.username!r}")
    return account


# What an action's success does to its service, in the statement that records the job's success (so both commit
# together, and only while the job is still at that attempt): $1 the service, then its arguments.
_SET_STATUS = ("UPDATE services SET status = $2, suspended_reason = $3, updated_at = now() "
               "WHERE id = $1 AND status = ANY($4::text[])")
_SET_PLAN = ("UPDATE services SET plan_id = $2, plan_code = $3, updated_at = now() "
             "WHERE id = $1 AND status = ANY($4::text[])")


def _becomes(result: dict, status: str, suspended_reason: str | None, allowed: set[str]) -> Outcome:
    """`result`, with the service moved to `status` if it is still in one of `allowed`."""
    return Outcome(result, _SET_STATUS, (status, suspended_reason, sorted(allowed)))


async def _no_turn_check() -> None:
    """Outside a worker's attempt (tests, tools): always the caller's turn."""


async def run_action(sessions: async_sessionmaker[AsyncSession], job_id: uuid.UUID, whm_for, *,
                     create_settles_s: float,
                     turn_check: Callable[[], Awaitable[None]] = _no_turn_check) -> dict | Outcome:
    """Carry out the job's action on its service's WHM account; the service's new state is the Outcome, recorded
    with the job's success. `create_settles_s`: Settings.create_settles_s (a terminate waits it out). `turn_check`
    raises OutOfTurn when the attempt outlived its turn (tracking.ensure_turn); it runs just before each call that
    changes the account."""
    job, service, server = await _load(sessions, job_id)
    done = rules.DONE.get(job.kind)
    if done is not None and service.status == done:
        return {"service_id": str(service.id), "outcome": "already_done"}
    whm = whm_for(server) if server else None
    if job.kind == "provision.terminate":
        return await _terminate(sessions, job, service, whm, turn_check, create_settles_s=create_settles_s)
    return await _HANDLERS[job.kind](sessions, job, service, whm, turn_check)


async def _suspend(sessions, job: Job, service: Service, whm: WhmPort, turn_check) -> Outcome:
    if service.status != rules.ACTIVE:
        raise InvalidState(rules.refusal("suspend", service.status))
    account = await _existing_account(whm, service)
    if not int(account.get("suspended") or 0):
        await turn_check()
        await whm.suspendacct(service.username, job.args.get("reason") or "suspended by hostq")
    return _becomes({"service_id": str(service.id), "outcome": "suspended"}, rules.SUSPENDED,
                    job.args.get("suspended_reason", "reseller"), {rules.ACTIVE})


async def _unsuspend(sessions, job: Job, service: Service, whm: WhmPort, turn_check) -> Outcome:
    if service.status != rules.SUSPENDED:
        raise InvalidState(rules.refusal("unsuspend", service.status))
    account = await _existing_account(whm, service)
    if int(account.get("suspended") or 0):
        await turn_check()
        await whm.unsuspendacct(service.username)
    return _becomes({"service_id": str(service.id), "outcome": "unsuspended"}, rules.ACTIVE, None,
                    {rules.SUSPENDED})


async def _terminate(sessions, job: Job, service: Service, whm: WhmPort | None, turn_check, *,
                     create_settles_s: float) -> Outcome:
    live = service.status in (rules.ACTIVE, rules.SUSPENDED)
    result = {"service_id": str(service.id), "outcome": "nothing_to_remove"}
    if whm is not None and service.username:
        if live or service.create_attempted_at is not None:  # WHM may hold its account
            if await _account(whm, service) is not None:
                await turn_check()
                await whm.removeacct(service.username)
                result["outcome"] = "removed"
            elif not live and (settled := still_settling(service.create_attempted_at, create_settles_s)) is not None:
                # Its create failed or was cancelled with a createacct in doubt (timed out): WHM may still make the
                # account, which a terminate that found nothing would leave behind, billed to nobody.
                raise TransientIntegrationError(
                    "whm_create_in_doubt", f"a createacct for {service.username!r} was sent at "
                    f"{rfc3339(service.create_attempted_at)} and WHM may still create the account: the terminate asks "
                    f"WHM again until {rfc3339(settled, up=True)}, when nothing more can appear (retry the job after "
                    "that if it failed)", settles_at=settled)
            elif await _earlier_attempt_may_have_removed(sessions, job):
                # An earlier attempt of this job got as far as WHM, most likely its removeacct went through and
                # its answer was lost (a timeout, a crash): not "nothing to remove".
                result["outcome"] = "already_removed"
            elif not live:
                await _name_leftover_user(whm, service, result)
    return _becomes(result, rules.TERMINATED, None, {rules.PENDING, rules.ACTIVE, rules.SUSPENDED, rules.FAILED})


async def _earlier_attempt_may_have_removed(sessions, job: Job) -> bool:
    """Whether an earlier attempt of the terminate may have sent removeacct: one that failed other than by waiting
    for a createacct in doubt (which found no account, so sent nothing)."""
    if job.attempts <= 1 and job.round <= 1:
        return False
    async with session_scope(sessions) as session:
        return await session.scalar(select(JobAttempt.id).where(
            JobAttempt.job_id == job.id, tuple_(JobAttempt.round, JobAttempt.attempt) != (job.round, job.attempts),
            JobAttempt.error_code.is_distinct_from("whm_create_in_doubt")).limit(1)) is not None


async def _name_leftover_user(whm: WhmPort, service: Service, result: dict) -> None:
    """A createacct of the service may have gone out (and WHM did not refuse it at once), yet WHM has no account
    under its name: if the name is in use all the same, it is most likely the system user a failed createacct left
    behind (integrations.md), which removeacct cannot reach. Say so, or nobody would know. (hostq checked the name
    was free before its first createacct: what holds it now came with or after that call.)"""
    if await whm.verify_new_username(service.username):
        return
    result["leftover_user"] = service.username
    log.warning("terminate of service %s: WHM server %s has no account %r but the name is in use, most likely by a "
                "system user a failed createacct left behind: an operator should look on the server and remove it",
                service.id, service.server_id, service.username)


async def _change_plan(sessions, job: Job, service: Service, whm: WhmPort, turn_check) -> dict | Outcome:
    async with session_scope(sessions) as session:
        plan = await session.get(Plan, uuid.UUID(job.args["plan_id"]))
    if service.plan_id == plan.id:
        return {"service_id": str(service.id), "outcome": "already_done"}
    if service.status not in (rules.ACTIVE, rules.SUSPENDED):
        raise InvalidState(rules.refusal("change_plan", service.status))
    account = await _existing_account(whm, service)
    if account.get("plan") != plan.whm_package:
        await turn_check()
        await whm.changepackage(service.username, plan.whm_package)
    return Outcome({"service_id": str(service.id), "outcome": "plan_changed", "plan": plan.code}, _SET_PLAN,
                   (plan.id, plan.code, sorted({rules.ACTIVE, rules.SUSPENDED})))


_HANDLERS = {"provision.suspend": _suspend, "provision.unsuspend": _unsuspend,
             "provision.change_plan": _change_plan}
