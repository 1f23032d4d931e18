"""Service use cases: order, read, list."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, NoReturn

import asyncpg
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.errors import Conflict, InvalidState, NotFound, ValidationFailed
from domain.ids import new_id
from domain.jobs.models import Job
from domain.jobs.service import new_job
from domain.pagination import page, paginate
from domain.pg import Row
from domain.provisioning import rules as naming
from domain.provisioning.service import PLACE, check_placement
from domain.services import rules
from domain.services.models import Service


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


# One round trip (the API's busiest write skips the ORM, see domain/pg.py): the customer (not erased, its row held
# FOR KEY SHARE, as the service's foreign key would hold it anyway, so that an erasure waits for the order: see
# domain/customers/privacy.py), the plan and whether it is sold in the cycle, the region's servers and the one to place on (locked until the transaction ends, and only
# when customer and plan are there); then, only if all of them are there, the service and its job (data-modifying
# CTEs run whether or not the final SELECT reads them). The final row is the service (NULLs when nothing was
# written) with what _refuse needs to name the reason. `$7`, the job's created_at, stamps the service too and
# dates its first due date in the tenant's time zone.
_PLACE_ORDER = f"""
WITH customer AS (SELECT id FROM customers WHERE id = $1 AND tenant_id = $2 AND erased_at IS NULL FOR KEY SHARE),
     plan AS (SELECT id, code, prices ? $4::text AS sold FROM plans WHERE tenant_id = $2 AND code = $3),
     place AS ({PLACE.format(region="$5::text")}
               WHERE EXISTS (SELECT FROM customer) AND EXISTS (SELECT FROM plan WHERE sold)),
     service AS (
       INSERT INTO services (id, created_at, updated_at, tenant_id, customer_id, plan_id, plan_code, domain, region,
                             billing_cycle, status, username, server_id, next_due_date, last_job_id)
       SELECT $6, $7::timestamptz, now(), $2, customer.id, plan.id, plan.code, $8, $5, $4, $9, $10, place.chosen,
              ($7::timestamptz AT TIME ZONE tenant.timezone)::date, $11
       FROM customer, plan, place, tenants AS tenant WHERE plan.sold AND place.chosen IS NOT NULL AND tenant.id = $2
       RETURNING id, customer_id, plan_code, domain, region, billing_cycle, status, username, server_id,
                 next_due_date, suspended_reason, last_job_id, created_at),
     job AS (
       INSERT INTO jobs (id, created_at, tenant_id, kind, queue, status, attempts, round, max_attempts,
                         resource_type, resource_id, args, request_id)
       SELECT $11, $7, $2, $12, $13, $14, $15, $16, $17, $18, service.id, $19, $20 FROM service)
SELECT service.*, (SELECT count(*) FROM customer) AS customers, (SELECT sold FROM plan) AS sold,
       CASE WHEN NOT EXISTS (SELECT FROM customer) THEN EXISTS (
         SELECT FROM customers WHERE id = $1 AND tenant_id = $2 AND erased_at IS NOT NULL) END AS erased,
       (SELECT servers FROM place) AS servers, (SELECT chosen FROM place) AS chosen
FROM (VALUES (1)) AS one LEFT JOIN service ON true"""


async def place_order(conn: Any, tenant_id: uuid.UUID, order: Order, *, max_attempts: int,
                      request_id: str | None) -> tuple[Row, Job]:
    """Record the service and its provisioning job on the caller's asyncpg transaction (domain/pg.py).

    The job is not sent here: the caller sends it once the transaction commits (the outbox).
    """
    domain = _check_order(order)
    service_id = new_id()
    job = new_job(kind="provision.create", tenant_id=tenant_id, max_attempts=max_attempts, resource_type="service",
                  resource_id=service_id, region=order.region, request_id=request_id)
    try:
        record = await conn.fetchrow(
            _PLACE_ORDER, order.customer_id, tenant_id, order.plan, order.billing_cycle, order.region, service_id,
            job.created_at, domain, rules.PROVISIONING, order.username, job.id, job.kind, job.queue, job.status,
            job.attempts, job.round, job.max_attempts, job.resource_type, job.args, job.request_id)
    except asyncpg.UniqueViolationError as exc:  # the transaction is rolled back by its owner
        raise _taken(exc.constraint_name, domain, order.username) from None
    if record["id"] is None:
        _refuse(order, record)
    return Row(record), job


def _taken(constraint: str | None, domain: str, username: str | None) -> Conflict:
    """The 409 for the unique index an order ran into, naming the field that clashed."""
    if constraint == "uq_services_server_user8" and username:
        field, message = "username", f"{username!r} is in use on the server (WHM compares the first 8 characters)"
    else:
        field, message = "domain", f"{domain!r} is already in use"
    return Conflict(f"{field}: {message}", errors=[{"field": field, "message": message}])


def _refuse(order: Order, record: Any) -> NoReturn:
    """Why _PLACE_ORDER wrote nothing, the first of: customer, plan, billing cycle, region, capacity."""
    if record["erased"]:
        raise InvalidState(f"customer_id: {rules.ERASED_CUSTOMER}",
                           errors=[{"field": "customer_id", "message": rules.ERASED_CUSTOMER}])
    if not record["customers"]:
        raise _field("customer_id", "no such customer")
    if record["sold"] is None:
        raise _field("plan", "no such plan")
    if not record["sold"]:
        raise _field("billing_cycle", f"plan {order.plan!r} is not sold {order.billing_cycle}")
    check_placement(order.region, record["servers"], record["chosen"])
    raise AssertionError("the order was refused for no reason")  # every condition of its INSERT held


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
