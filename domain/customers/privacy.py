"""Personal data (LGPD): export everything held on a customer; erase the personal fields, keep fiscal records."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.customers.models import Customer
from domain.customers.service import get_customer
from domain.errors import InvalidState
from domain.jobs.models import Job
from domain.services import rules
from domain.services.models import Service

#: Services in these states still run on WHM for the customer: erasure waits until they end (and for a failed one
#: whose createacct may have made its account: services.rules.holds_place).
LIVE = ("pending", "provisioning", "active", "suspended")
ERASED_NAME = "[erased]"


async def export_customer(session: AsyncSession, tenant_id: uuid.UUID, customer_id: uuid.UUID | None) -> dict:
    """The customer, their services and the jobs that worked on those services."""
    customer = await get_customer(session, tenant_id, customer_id)
    services = list((await session.scalars(select(Service).where(Service.customer_id == customer.id)
                                           .order_by(Service.id))).all())
    jobs = list((await session.scalars(select(Job).where(Job.resource_id.in_([s.id for s in services]))
                                       .order_by(Job.id))).all()) if services else []
    return {"customer": customer, "services": services, "jobs": jobs}


async def erase_customer(session: AsyncSession, tenant_id: uuid.UUID, customer_id: uuid.UUID | None) -> Customer:
    """Blank the personal fields; refused while the customer has live services.

    The customer's row is locked FOR UPDATE first: an order or a provision in flight holds it FOR KEY SHARE
    (domain.services), so erasure waits for it and then sees its service, and one that comes after sees the
    customer erased and is refused.
    """
    customer = await get_customer(session, tenant_id, customer_id, lock=True)
    held = or_(Service.status.in_(LIVE), and_(Service.status == rules.FAILED, Service.create_attempted_at.is_not(None)))
    live = await session.scalar(select(Service.id).where(Service.customer_id == customer.id, held).limit(1))
    if live is not None:
        # A failed one may hold an account on WHM (a createacct in doubt), made with the customer's email.
        raise InvalidState("the customer has services that are live or may have a WHM account (failed after a "
                           "createacct): terminate them before erasing personal data")
    customer.name, customer.email = ERASED_NAME, f"erased-{customer.id}@erased.invalid"
    customer.phone = customer.document = customer.external_id = None
    customer.channels = []
    customer.erased_at = customer.erased_at or datetime.now(timezone.utc)
    await session.flush()
    return customer
