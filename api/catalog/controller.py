"""`/v1/plans`."""

from __future__ import annotations

from litestar import Controller, get, post
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import requires
from api.catalog.schemas import Plan, PlanCreate, PlanList
from api.customers.controller import Limit
from api.openapi import Cursor, documented
from domain.catalog import service
from domain.tenants.service import Principal


class PlanController(Controller):
    path = "/v1/plans"
    tags = ["plans"]

    @post("/", opt=requires("services:write"), status_code=201, summary="Create a plan",
          description="`code` is unique per tenant (reusing it is 409 conflict) and is what orders name. `prices` "
                      "maps billing cycles to cents; a cycle absent from it cannot be ordered.",
          **documented("POST", conflict=True))
    async def create(self, data: PlanCreate, session: AsyncSession, caller: Principal) -> Plan:
        row = await service.create_plan(session, caller.tenant_id, code=data.code, name=data.name,
                                        whm_package=data.whm_package, prices=data.prices, currency=data.currency)
        return Plan.of(row)

    @get("/", opt=requires("services:read"), summary="List plans", **documented("GET"))
    async def list_(self, session: AsyncSession, caller: Principal, limit: Limit = 50,
                    cursor: Cursor = None) -> PlanList:
        rows, next_cursor = await service.list_plans(session, caller.tenant_id, limit=limit, cursor=cursor)
        return PlanList(data=[Plan.of(r) for r in rows], next_cursor=next_cursor)
