"""Customer use cases: create, read, list."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.customers import rules
from domain.customers.models import Customer
from domain.errors import Conflict, NotFound, ValidationFailed
from domain.ids import new_id
from domain.pagination import page, paginate
from domain.pg import Row


_INSERT = """
INSERT INTO customers (id, created_at, tenant_id, name, email, phone, document, channels, external_id)
VALUES ($1, now(), $2, $3, $4, $5, $6, $7, $8)
RETURNING id, created_at, name, email, phone, document, channels, external_id, erased_at"""


async def create_customer(conn: Any, tenant_id: uuid.UUID, *, name: str, email: str,
                          phone: str | None = None, document: str | None = None,
                          channels: list[str] | None = None, external_id: str | None = None) -> Row:
    """A new customer of the tenant; `external_id` is unique per tenant.

    One INSERT on the request's asyncpg transaction (domain/pg.py): the API's busiest write skips the ORM.
    """
    channels = channels if channels is not None else ["email"]
    errors = rules.field_errors(name=name, email=email, phone=phone, document=document, channels=channels)
    if errors:
        raise ValidationFailed("the customer has invalid fields", errors=errors)
    try:
        record = await conn.fetchrow(_INSERT, new_id(), tenant_id, name.strip(), email, phone, document,
                                     list(dict.fromkeys(channels)), external_id)
    except asyncpg.UniqueViolationError:  # the transaction is rolled back by its owner
        raise Conflict(f"a customer with external_id {external_id!r} already exists",
                       errors=[{"field": "external_id", "message": "another customer of yours has it"}]) from None
    return Row(record)


async def get_customer(session: AsyncSession, tenant_id: uuid.UUID, customer_id: uuid.UUID | None, *,
                       lock: bool = False) -> Customer:
    """The tenant's customer, or NotFound (another tenant's id looks exactly like a missing one); `lock`: its row
    FOR UPDATE until the transaction ends."""
    customer = await session.get(Customer, customer_id, with_for_update=True if lock else None,
                                 populate_existing=lock) if customer_id else None
    if customer is None or customer.tenant_id != tenant_id:
        raise NotFound("no such customer")
    return customer


async def customer_erased(session: AsyncSession, customer_id: uuid.UUID) -> bool:
    """Whether the customer's personal data was erased; their row stays held FOR KEY SHARE until the transaction
    ends, so an erasure waits for what this transaction does for them (privacy.erase_customer)."""
    customer = await session.get(Customer, customer_id, with_for_update={"read": True, "key_share": True},
                                 populate_existing=True)
    return customer is not None and customer.erased_at is not None


async def list_customers(session: AsyncSession, tenant_id: uuid.UUID, *, limit: int, cursor: str | None,
                         external_id: str | None = None) -> tuple[list[Customer], str | None]:
    """A page of the tenant's customers, newest first."""
    stmt = select(Customer).where(Customer.tenant_id == tenant_id)
    if external_id is not None:
        stmt = stmt.where(Customer.external_id == external_id)
    rows = list((await session.scalars(paginate(stmt, Customer.id, limit, cursor))).all())
    return page(rows, limit)
