"""`/v1/customers`."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import requires
from api.customers.schemas import Customer, CustomerCreate, CustomerList
from domain.customers import service
from domain.ids import parse_id
from domain.tenants.service import Principal

Limit = Annotated[int, Parameter(ge=1, le=200, description="Page size, 1..200")]


class CustomerController(Controller):
    path = "/v1/customers"
    tags = ["customers"]

    @post("/", guards=[requires("customers:write")], status_code=201, summary="Create a customer")
    async def create(self, data: CustomerCreate, session: AsyncSession, caller: Principal) -> Customer:
        row = await service.create_customer(session, caller.tenant_id, name=data.name, email=data.email,
                                            phone=data.phone, document=data.document, channels=data.channels,
                                            external_id=data.external_id)
        return Customer.of(row)

    @get("/{customer_id:str}", guards=[requires("customers:read")], summary="Get a customer")
    async def read(self, customer_id: str, session: AsyncSession, caller: Principal) -> Customer:
        return Customer.of(await service.get_customer(session, caller.tenant_id, parse_id(customer_id)))

    @get("/", guards=[requires("customers:read")], summary="List customers")
    async def list_(self, session: AsyncSession, caller: Principal, limit: Limit = 50, cursor: str | None = None,
                    external_id: str | None = None) -> CustomerList:
        rows, next_cursor = await service.list_customers(session, caller.tenant_id, limit=limit, cursor=cursor,
                                                         external_id=external_id)
        return CustomerList(data=[Customer.of(r) for r in rows], next_cursor=next_cursor)
