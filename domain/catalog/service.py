"""Plan use cases: create and list the tenant's catalogue."""

from __future__ import annotations

import re
import uuid

import pycountry
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from domain.catalog.models import Plan
from domain.errors import Conflict, ValidationFailed
from domain.pagination import page, paginate
from domain.services.rules import BILLING_CYCLES

_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: A WHM package is a file under /var/cpanel/packages, named as WHM shows it (a reseller's as `owner_Name`, spaces
#: allowed): no '/', no control characters, not '.' or '..'. Whether the server has it, only createacct can tell.
_PACKAGE = re.compile(r"(?!\.\.?$)[^/\x00-\x1f\x7f]+")
_PACKAGE_RULE = "a WHM package name: no '/' or control characters, not '.' or '..'"
#: The highest price, in cents (Stripe's bound for an amount: 999,999.99): well inside a 64-bit integer and a
#: JavaScript number, so every client reads it exactly, and invoice totals built from it do not overflow.
MAX_CENTS = 99_999_999
#: ISO 4217 codes that are not a currency a plan can be priced in: precious metals, bond-market and other units of
#: account, fund codes, and the codes for testing (XTS) and for no currency (XXX).
NOT_MONEY = frozenset({"XAU", "XAG", "XPT", "XPD", "XBA", "XBB", "XBC", "XBD", "XDR", "XSU", "XUA", "XTS", "XXX",
                       "BOV", "CHE", "CHW", "CLF", "COU", "MXV", "USN", "UYI", "UYW"})


def plan_errors(code: str, name: str, whm_package: str, currency: str, prices: dict[str, int]) -> list[dict]:
    """Every problem with a new plan's fields."""
    errors = []
    if not _CODE.match(code):
        errors.append({"field": "code", "message": "1-64 letters, digits, '_', '.', '-'"})
    if not name.strip():
        errors.append({"field": "name", "message": "must not be empty"})
    if not whm_package.strip():
        errors.append({"field": "whm_package", "message": "must not be empty"})
    elif not _PACKAGE.fullmatch(whm_package.strip()):
        errors.append({"field": "whm_package", "message": _PACKAGE_RULE})
    if (not re.fullmatch(r"[A-Z]{3}", currency) or currency in NOT_MONEY
            or pycountry.currencies.get(alpha_3=currency) is None):
        errors.append({"field": "currency", "message": "an ISO 4217 code such as BRL"})
    unknown = sorted(set(prices) - set(BILLING_CYCLES))
    if unknown:
        named = ", ".join(repr(cycle[:40]) for cycle in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        errors.append({"field": "prices", "message": f"unknown billing cycle(s) {named}: "
                                                     f"keys must be among {', '.join(BILLING_CYCLES)}"})
    elif not prices:
        errors.append({"field": "prices", "message": "must price at least one billing cycle "
                                                     f"({', '.join(BILLING_CYCLES)})"})
    if any(not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= MAX_CENTS for v in prices.values()):
        errors.append({"field": "prices", "message": f"prices are integer cents from 0 to {MAX_CENTS}"})
    return errors


async def create_plan(session: AsyncSession, tenant_id: uuid.UUID, *, code: str, name: str, whm_package: str,
                      prices: dict[str, int], currency: str = "BRL") -> Plan:
    """A new plan; its `code` is unique per tenant."""
    errors = plan_errors(code, name, whm_package, currency, prices)
    if errors:
        raise ValidationFailed("the plan has invalid fields", errors=errors)
    plan = Plan(tenant_id=tenant_id, code=code, name=name.strip(), whm_package=whm_package.strip(),
                currency=currency, prices=dict(prices))
    session.add(plan)
    try:
        await session.flush()
    except IntegrityError:  # the unique key: the transaction is rolled back by its owner
        raise Conflict(f"a plan with code {code!r} already exists",
                       errors=[{"field": "code", "message": "another plan of yours has it"}]) from None
    return plan


async def plan_by_code(session: AsyncSession, tenant_id: uuid.UUID, code: str) -> Plan | None:
    """The tenant's plan with that code, if any."""
    return await session.scalar(select(Plan).where(Plan.tenant_id == tenant_id, Plan.code == code))


async def list_plans(session: AsyncSession, tenant_id: uuid.UUID, *, limit: int,
                     cursor: str | None) -> tuple[list[Plan], str | None]:
    """A page of the tenant's plans, newest first."""
    stmt = select(Plan).where(Plan.tenant_id == tenant_id)
    rows = list((await session.scalars(paginate(stmt, Plan.id, limit, cursor))).all())
    return page(rows, limit)
