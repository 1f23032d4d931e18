"""Customer shapes of the public API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from domain.customers.models import Customer as CustomerRow
from domain.times import to_second


class CustomerCreate(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /v1/customers`: `name` and `email` required."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200, examples=["Ana Souza"])]
    email: Annotated[str, msgspec.Meta(min_length=3, max_length=320, examples=["ana@example.com"])]
    phone: Annotated[str, msgspec.Meta(description="E.164", examples=["+5511987654321"])] | None = None
    document: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{11}$|^[0-9]{14}$", description="CPF or CNPJ digits")] | None = None
    channels: Annotated[list[str], msgspec.Meta(
        description="How to reach the customer: a non-empty subset of email, whatsapp, sms (whatsapp and sms need "
                    "`phone`); default [\"email\"]. Stored; this version sends no messages yet",
        examples=[["email", "whatsapp"]])] | None = None
    external_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200, examples=["crm-4711"],
                                             description="Your own id for the customer, unique per tenant")] | None = None


class Customer(msgspec.Struct):
    """A reseller's customer."""

    id: uuid.UUID
    name: Annotated[str, msgspec.Meta(examples=["Ana Souza"])]
    email: Annotated[str, msgspec.Meta(examples=["ana@example.com"])]
    phone: Annotated[str, msgspec.Meta(description="E.164", examples=["+5511987654321"])] | None
    document: Annotated[str, msgspec.Meta(description="CPF or CNPJ digits")] | None
    channels: Annotated[list[str], msgspec.Meta(examples=[["email"]])]
    external_id: str | None
    created_at: datetime
    erased_at: Annotated[datetime, msgspec.Meta(
        description="When the personal data was erased (DELETE); null while it is held")] | None = None

    @classmethod
    def of(cls, row: CustomerRow) -> "Customer":
        return cls(id=row.id, name=row.name, email=row.email, phone=row.phone, document=row.document,
                   channels=list(row.channels), external_id=row.external_id, created_at=to_second(row.created_at),
                   erased_at=to_second(row.erased_at))


class CustomerList(msgspec.Struct):
    """A page of customers, newest first."""

    data: list[Customer]
    next_cursor: str | None


class CustomerExport(msgspec.Struct):
    """Everything hostq holds on a customer (LGPD access request)."""

    customer: Customer
    services: list["Service"]
    jobs: list["Job"]


from api.jobs.schemas import Job  # noqa: E402  (after Customer: the service schema imports nothing of ours)
from api.services.schemas import Service  # noqa: E402
