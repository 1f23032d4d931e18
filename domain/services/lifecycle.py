"""Asking for an action on a service: check its state, return an in-flight job, or record a new one."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.catalog.models import Plan
from domain.catalog.service import plan_by_code
from domain.customers.service import customer_erased
from domain.errors import Conflict, InvalidState, NoCapacity, NotFound, ValidationFailed
from domain.jobs import rules as job_rules
from domain.jobs.models import Job
from domain.jobs.service import record_job
from domain.provisioning.service import no_room_again
from domain.services import rules
from domain.services.models import Service


async def _in_flight(session: AsyncSession, service_id: uuid.UUID) -> Job | None:
    return await session.scalar(select(Job).where(Job.resource_id == service_id,
                                                  Job.status.in_(job_rules.IN_FLIGHT))
                                .order_by(Job.created_at.desc()).limit(1))


async def _plan(session: AsyncSession, service: Service, code: str | None):
    """The plan a change-plan asks for; a bad input is a 400 whatever the service's state."""
    target = await plan_by_code(session, service.tenant_id, code or "")
    if target is None:
        raise ValidationFailed("plan: no such plan", errors=[{"field": "plan", "message": "no such plan"}])
    if service.billing_cycle not in (target.prices or {}):  # as an order in that cycle would be refused
        message = f"plan {target.code!r} is not sold {service.billing_cycle}, the service's billing cycle"
        raise ValidationFailed(f"plan: {message}", errors=[{"field": "plan", "message": message}])
    current = await session.get(Plan, service.plan_id) if service.plan_id else None
    if current is not None and current.currency != target.currency:  # its invoices would change currency
        message = (f"plan {target.code!r} is priced in {target.currency}; the service is billed in "
                   f"{current.currency}, its plan's currency")
        raise ValidationFailed(f"plan: {message}", errors=[{"field": "plan", "message": message}])
    return target


def _args(service: Service, action: str, reason: str | None, target) -> dict:
    if action == "suspend":
        return {"reason": (reason or "").strip()[:200], "suspended_reason": "reseller"}
    if action != "change_plan":
        return {}
    if target.id == service.plan_id:
        raise InvalidState(f"the service is already on plan {target.code!r}")
    return {"plan_id": str(target.id)}


async def request_action(session: AsyncSession, tenant_id: uuid.UUID, service_id: uuid.UUID | None, action: str, *,
                         max_attempts: int, request_id: str | None, reason: str | None = None,
                         plan: str | None = None) -> tuple[Service, Job]:
    """The job doing `action` on the service: the one already in flight for it, or a new one."""
    service = await session.get(Service, service_id, with_for_update=True) if service_id else None
    if service is None or service.tenant_id != tenant_id:
        raise NotFound("no such service")
    spec = rules.ACTIONS[action]
    target = await _plan(session, service, plan) if action == "change_plan" else None
    running = await _in_flight(session, service.id)
    if running is not None:
        if running.kind != spec.kind:
            raise Conflict(f"the service has a {running.kind} job in flight ({running.id}); try again when it ends")
        if target is not None and running.args != {"plan_id": str(target.id)}:
            raise Conflict(f"the service has a change to another plan in flight ({running.id}); try again when "
                           "it ends")
        return service, running  # natural idempotency: asking again returns the same job
    if not rules.can_start(action, service.status):
        raise InvalidState(rules.refusal(action, service.status))
    if spec.at_once == rules.PROVISIONING and service.status == rules.FAILED:
        if await customer_erased(session, service.customer_id):
            raise InvalidState(rules.ERASED_CUSTOMER)
        if await no_room_again(session, service):  # its detail (the server, its count) is for ops, not tenants
            raise NoCapacity("cannot provision the service again: its server has no room for it now (full, or "
                             "closed to new services); try again later")
    args = _args(service, action, reason, target)
    job = record_job(session, kind=spec.kind, tenant_id=tenant_id, max_attempts=max_attempts,
                     resource_type="service", resource_id=service.id, region=service.region, args=args,
                     request_id=request_id)
    if spec.at_once:
        service.status = spec.at_once
    service.last_job_id = job.id
    await session.flush()
    return service, job
