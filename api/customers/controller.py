"""`/v1/customers`."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, delete, get, post
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import principal, requires
from api.deps import ON_DB, db_for
from api.customers.schemas import Customer, CustomerCreate, CustomerExport, CustomerList, Job, Service
from api.openapi import Cursor, documented, resource_id
from domain.customers import privacy, service
from domain.ids import parse_id
from domain.tenants.service import Principal

Limit = Annotated[int, Parameter(ge=1, le=200, description="Page size, 1..200 (default 50); outside that range is 400")]
CustomerId = resource_id("customer")
ExternalId = Annotated[str | None, Parameter(description="Only the customer with this external_id (yours, unique "
                                                           "per tenant)")]


class CustomerController(Controller):
    path = "/v1/customers"
    tags = ["customers"]

    @post("/", opt={**requires("customers:write"), **ON_DB}, status_code=201, summary="Create a customer",
          description="`name` and `email` are required. `external_id`, your own id for the customer, is unique per "
                      "tenant: reusing it is 409 conflict.", **documented("POST", conflict=True))
    async def create(self, data: CustomerCreate, request: Request) -> Customer:
        # No dependencies (the hot path): the request gives the caller and the connection.
        async with db_for(request) as db:
            row = await service.create_customer(db, principal(request).tenant_id, name=data.name, email=data.email,
                                                phone=data.phone, document=data.document, channels=data.channels,
                                                external_id=data.external_id)
        return Customer.of(row)

    @get("/{customer_id:str}", opt=requires("customers:read"), summary="Get a customer",
         **documented("GET", by_id=True))
    async def read(self, customer_id: CustomerId, session: AsyncSession, caller: Principal) -> Customer:
        return Customer.of(await service.get_customer(session, caller.tenant_id, parse_id(customer_id)))

    @get("/", opt=requires("customers:read"), summary="List customers", **documented("GET"))
    async def list_(self, session: AsyncSession, caller: Principal, limit: Limit = 50, cursor: Cursor = None,
                    external_id: ExternalId = None) -> CustomerList:
        rows, next_cursor = await service.list_customers(session, caller.tenant_id, limit=limit, cursor=cursor,
                                                         external_id=external_id)
        return CustomerList(data=[Customer.of(r) for r in rows], next_cursor=next_cursor)

    @get("/{customer_id:str}/export", opt=requires("customers:read"), summary="Export a customer's data (LGPD)",
         description="The customer, their services and the jobs that worked on those services.",
         **documented("GET", by_id=True))
    async def export(self, customer_id: CustomerId, session: AsyncSession, caller: Principal) -> CustomerExport:
        held = await privacy.export_customer(session, caller.tenant_id, parse_id(customer_id))
        return CustomerExport(customer=Customer.of(held["customer"]), services=[Service.of(s) for s in held["services"]],
                              jobs=[Job.of(j) for j in held["jobs"]])

    @delete("/{customer_id:str}", opt=requires("customers:write"), status_code=204,
            summary="Erase a customer's personal data (LGPD)",
            description="Blanks name, e-mail, phone, document and external_id; the customer row (and, once billing "
                        "exists, invoices and payments) stays for fiscal retention. 422 invalid_state while the "
                        "customer has pending, provisioning, active or suspended services, or a failed one whose "
                        "createacct may have made its WHM account (terminate it first).",
            **documented("DELETE", by_id=True, states=True))
    async def erase(self, customer_id: CustomerId, session: AsyncSession, caller: Principal) -> None:
        await privacy.erase_customer(session, caller.tenant_id, parse_id(customer_id))
