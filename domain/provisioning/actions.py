"""Suspend, unsuspend, terminate and change plan on WHM: each checks WHM's state first, so a retry is safe."""

from __future__ import annotations

import uuid

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.catalog.models import Plan
from domain.db import session_scope
from domain.errors import InvalidState, NotFound, PermanentIntegrationError
from domain.jobs.models import Job
from domain.provisioning.accounts import WhmPort
from domain.provisioning.models import WhmServer
from domain.services import rules
from domain.services.models import Service


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
        raise PermanentIntegrationError("whm_account_conflict", f"WHM user {service.username!r} has domain "
                                        f"{found.get('domain')!r}, not {service.domain!r}: an operator must look")
    return found


async def _existing_account(whm: WhmPort, service: Service) -> dict:
    """Our account on WHM; an error naming it when WHM has none (suspend, unsuspend, change plan need one)."""
    account = await _account(whm, service)
    if account is None:
        raise PermanentIntegrationError("whm_account_missing", f"WHM has no account {service.username!r}")
    return account


async def _finish(sessions, service: Service, allowed: set[str], **values) -> None:
    async with session_scope(sessions) as session:
        await session.execute(update(Service).where(Service.id == service.id, Service.status.in_(allowed))
                              .values(**values))


async def run_action(sessions: async_sessionmaker[AsyncSession], job_id: uuid.UUID, whm_for) -> dict:
    """Carry out the job's action on its service's WHM account, then record the service's new state."""
    job, service, server = await _load(sessions, job_id)
    done = rules.DONE.get(job.kind)
    if done is not None and service.status == done:
        return {"service_id": str(service.id), "outcome": "already_done"}
    handler = _HANDLERS[job.kind]
    return await handler(sessions, job, service, whm_for(server) if server else None)


async def _suspend(sessions, job: Job, service: Service, whm: WhmPort) -> dict:
    if service.status != rules.ACTIVE:
        raise InvalidState(rules.refusal("suspend", service.status))
    account = await _existing_account(whm, service)
    if not int(account.get("suspended") or 0):
        await whm.suspendacct(service.username, job.args.get("reason") or "suspended by hostq")
    await _finish(sessions, service, {rules.ACTIVE}, status=rules.SUSPENDED,
                  suspended_reason=job.args.get("suspended_reason", "reseller"))
    return {"service_id": str(service.id), "outcome": "suspended"}


async def _unsuspend(sessions, job: Job, service: Service, whm: WhmPort) -> dict:
    if service.status != rules.SUSPENDED:
        raise InvalidState(rules.refusal("unsuspend", service.status))
    account = await _existing_account(whm, service)
    if int(account.get("suspended") or 0):
        await whm.unsuspendacct(service.username)
    await _finish(sessions, service, {rules.SUSPENDED}, status=rules.ACTIVE, suspended_reason=None)
    return {"service_id": str(service.id), "outcome": "unsuspended"}


async def _terminate(sessions, job: Job, service: Service, whm: WhmPort | None) -> dict:
    outcome = "nothing_to_remove"
    has_account = service.status in (rules.ACTIVE, rules.SUSPENDED) or service.create_attempted_at is not None
    if whm is not None and service.username and has_account:
        if await _account(whm, service) is not None:
            await whm.removeacct(service.username)
            outcome = "removed"
        elif job.attempts > 1 or job.round > 1:
            # An earlier attempt of this job got as far as WHM, most likely its removeacct went through and
            # its answer was lost (a timeout, a crash): not "nothing to remove".
            outcome = "already_removed"
    live = {rules.PENDING, rules.ACTIVE, rules.SUSPENDED, rules.FAILED}
    await _finish(sessions, service, live, status=rules.TERMINATED, suspended_reason=None)
    return {"service_id": str(service.id), "outcome": outcome}


async def _change_plan(sessions, job: Job, service: Service, whm: WhmPort) -> dict:
    async with session_scope(sessions) as session:
        plan = await session.get(Plan, uuid.UUID(job.args["plan_id"]))
    if service.plan_id == plan.id:
        return {"service_id": str(service.id), "outcome": "already_done"}
    if service.status not in (rules.ACTIVE, rules.SUSPENDED):
        raise InvalidState(rules.refusal("change_plan", service.status))
    account = await _existing_account(whm, service)
    if account.get("plan") != plan.whm_package:
        await whm.changepackage(service.username, plan.whm_package)
    await _finish(sessions, service, {rules.ACTIVE, rules.SUSPENDED}, plan_id=plan.id, plan_code=plan.code)
    return {"service_id": str(service.id), "outcome": "plan_changed", "plan": plan.code}


_HANDLERS = {"provision.suspend": _suspend, "provision.unsuspend": _unsuspend,
             "provision.terminate": _terminate, "provision.change_plan": _change_plan}
