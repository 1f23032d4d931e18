"""The tenant's own view of its brand and settings (`/v1/tenant`)."""

from __future__ import annotations

import re
import uuid
from zoneinfo import available_timezones

from sqlalchemy.ext.asyncio import AsyncSession

from domain.customers.rules import valid_email
from domain.errors import NotFound, ValidationFailed
from domain.tenants.models import Tenant

_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")
_SENDER = re.compile(r"^[^<>]{1,100} <([^<>\s]+)>$")
EDITABLE = ("name", "sender", "support_email", "timezone", "lead_days", "allowed_origins")


async def get_tenant(session: AsyncSession, tenant_id: uuid.UUID) -> Tenant:
    """The caller's tenant."""
    tenant = await session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound("no such tenant")
    return tenant


def sender_problem(value: str) -> str | None:
    """What is wrong with a sender identity (the From of customer-facing mail), or None: `Brand <address>`, the
    brand being what the customer sees (white label), as `PATCH /v1/tenant` and `hostq tenants` take it."""
    matched = _SENDER.match(value)
    if matched is None or not valid_email(matched.group(1)):
        return 'must look like "Brand <billing@brand.example>"'
    return None


def _problems(changes: dict) -> list[dict[str, str]]:
    errors = []
    if "name" in changes and not str(changes["name"]).strip():
        errors.append({"field": "name", "message": "must not be empty"})
    sender = changes.get("sender")
    if sender is not None and (problem := sender_problem(sender)):
        errors.append({"field": "sender", "message": problem})
    if changes.get("support_email") is not None and not valid_email(changes["support_email"]):
        errors.append({"field": "support_email", "message": "not a valid e-mail address"})
    if "timezone" in changes and changes["timezone"] not in available_timezones():
        errors.append({"field": "timezone", "message": "an IANA time zone such as America/Sao_Paulo"})
    if "lead_days" in changes and not (isinstance(changes["lead_days"], int) and 0 <= changes["lead_days"] <= 90):
        errors.append({"field": "lead_days", "message": "0..90 days"})
    origins = changes.get("allowed_origins")
    if origins is not None and (len(origins) > 20 or not all(_ORIGIN.match(o) for o in origins)):
        errors.append({"field": "allowed_origins", "message": "up to 20 origins like https://panel.brand.example"})
    return errors


async def update_tenant(session: AsyncSession, tenant_id: uuid.UUID, changes: dict) -> Tenant:
    """Apply the given changes (only the editable fields), all or nothing."""
    unknown = sorted(set(changes) - set(EDITABLE))
    if unknown:
        raise ValidationFailed(f"cannot change {', '.join(unknown)}",
                               errors=[{"field": f, "message": "not editable"} for f in unknown])
    errors = _problems(changes)
    if errors:
        raise ValidationFailed("the tenant settings are invalid", errors=errors)
    tenant = await get_tenant(session, tenant_id)
    for field in ("name", "sender", "support_email", "timezone", "lead_days"):
        if field in changes:
            setattr(tenant, field, changes[field].strip() if field == "name" else changes[field])
    if "allowed_origins" in changes:
        tenant.settings = {**tenant.settings, "allowed_origins": list(dict.fromkeys(changes["allowed_origins"]))}
    await session.flush()
    return tenant
