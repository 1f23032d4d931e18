"""`/v1/tenant`: the caller's own brand and settings."""

from __future__ import annotations

from litestar import Controller, Request, get, patch
from sqlalchemy.ext.asyncio import AsyncSession

from redis.exceptions import RedisError

from api.auth import requires
from api.ratelimit import tenant_generation_key
from api.openapi import documented
from api.tenant.schemas import TenantPatch, TenantProfile
from domain.tenants.profile import get_tenant, update_tenant
from domain.tenants.service import Principal


class TenantController(Controller):
    path = "/v1/tenant"
    tags = ["tenant"]

    @get("/", summary="The tenant's brand and settings (any key)",
         **documented("GET", scoped=False))
    async def read(self, session: AsyncSession, caller: Principal) -> TenantProfile:
        return TenantProfile.of(await get_tenant(session, caller.tenant_id))

    @patch("/", opt=requires("tenant:write"), summary="Change the tenant's brand and settings",
           description="Only the fields sent change, all or nothing. `rate_limit` is set by the platform operator.",
           **documented("PATCH"))
    async def update(self, data: TenantPatch, session: AsyncSession, caller: Principal,
                     request: Request) -> TenantProfile:
        tenant = await update_tenant(session, caller.tenant_id, data.changes())
        await _announce(request, caller)
        return TenantProfile.of(tenant)


async def _announce(request: Request, caller: Principal) -> None:
    """Tell every API process's key cache that this tenant's settings (e.g. CORS origins) changed."""
    resources = request.app.state.resources
    try:
        await resources.redis.incr(tenant_generation_key(resources.settings.namespace, caller.tenant_id))
    except (RedisError, OSError):
        pass  # without Redis no process trusts its cache: the change is seen anyway
