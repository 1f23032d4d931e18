"""Service use cases: order, read, list."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from domain.catalog.models import Plan
from domain.customers.models import Customer
from domain.errors import Conflict, NotFound, ValidationFailed
from domain.ids import new_id
from domain.jobs.models import Job
from domain.jobs.service import record_job
from domain.pagination import page, paginate
from domain.provisioning import rules as naming
from domain.provisioning.service import place_in_region
from domain.services import rules
from domain.services.models import Service
from domain.tenants.models import Tenant


@dataclass(frozen=True, slots=True)
class Order:
    """What a reseller asks for in `POST /v1/services`."""

    customer_id: uuid.UUID | None
    plan: str
    domain: str
    region: str
    billing_cycle: str
    username: str | None = None
    provision: str = "on_payment"


def _field(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", errors=[{"field": field, "message": message}])


def _check_order(order: Order) -> str:
    domain = naming.normalize_domain(order.domain)
    if not naming.valid_domain(domain):
        raise _field("domain", "not a valid domain")
    if order.billing_cycle not in rules.BILLING_CYCLES:
        raise _field("billing_cycle", f"one of {', '.join(rules.BILLING_CYCLES)}")
    if order.username is not None and (problem := naming.username_problem(order.username)):
        raise _field("username", problem)
    if order.provision != "now":
        # Billing (first invoice, PIX, provisioning on payment) is not built yet.
        raise _field("provision", "only 'now' is supported until billing ships; 'on_payment' is not available yet")
    return domain


async def place_order(session: AsyncSession, tenant_id: uuid.UUID, order: Order, *, max_attempts: int,
                      request_id: str | None) -> tuple[Service, Job]:
    """Record the service and its provisioning job in one transaction."""
    domain = _check_order(order)
    customer_id, plan, timezone = await _order_context(session, tenant_id, order)
    if order.billing_cycle not in plan.prices:
        raise _field("billing_cycle", f"plan {plan.code!r} is not sold {order.billing_cycle}")
    server_id = await place_in_region(session, order.region)
    service = Service(id=new_id(), tenant_id=tenant_id, customer_id=customer_id, plan_id=plan.id, plan_code=plan.code,
                      domain=domain, region=order.region, billing_cycle=order.billing_cycle,
                      status=rules.PROVISIONING, username=order.username, server_id=server_id,
                      next_due_date=datetime.now(ZoneInfo(timezone or "America/Sao_Paulo")).date())
    job = record_job(session, kind="provision.create", tenant_id=service.tenant_id, max_attempts=max_attempts,
                     resource_type="service", resource_id=service.id, region=service.region, request_id=request_id)
    service.last_job_id = job.id
    session.add(service)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"domain {service.domain!r} (or username {service.username!r}) is already in use") from None
    return service, job


async def _order_context(session: AsyncSession, tenant_id: uuid.UUID,
                         order: Order) -> tuple[uuid.UUID, Plan, str]:
    """The order's customer id, plan and the tenant's time zone in one query; the missing one named if any."""
    row = (await session.execute(
        select(Customer.id, Plan, Tenant.timezone)
        .join(Plan, (Plan.tenant_id == Customer.tenant_id) & (Plan.code == order.plan))
        .join(Tenant, Tenant.id == Customer.tenant_id)
        .where(Customer.id == order.customer_id, Customer.tenant_id == tenant_id))).first() \
        if order.customer_id else None
    if row is not None:
        return row[0], row[1], row[2]
    customer = await session.get(Customer, order.customer_id) if order.customer_id else None
    if customer is None or customer.tenant_id != tenant_id:
        raise _field("customer_id", "no such customer")
    raise _field("plan", "no such plan")


async def get_service(session: AsyncSession, tenant_id: uuid.UUID, service_id: uuid.UUID | None) -> Service:
    """The tenant's service, or NotFound."""
    service = await session.get(Service, service_id) if service_id else None
    if service is None or service.tenant_id != tenant_id:
        raise NotFound("no such service")
    return service


async def list_services(session: AsyncSession, tenant_id: uuid.UUID, *, limit: int, cursor: str | None,
                        customer_id: uuid.UUID | None = None, status: str | None = None) -> tuple[list, str | None]:
    """A page of the tenant's services, newest first, optionally filtered."""
    stmt = select(Service).where(Service.tenant_id == tenant_id)
    if customer_id is not None:
        stmt = stmt.where(Service.customer_id == customer_id)
    if status is not None:
        if status not in rules.STATUSES:
            raise _field("status", f"one of {', '.join(rules.STATUSES)}")
        stmt = stmt.where(Service.status == status)
    rows = list((await session.scalars(paginate(stmt, Service.id, limit, cursor))).all())
    return page(rows, limit)
