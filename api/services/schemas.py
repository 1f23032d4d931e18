"""Service (order) shapes of the public API."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Literal

import msgspec

from api.jobs.schemas import Job
from domain.services.models import Service as ServiceRow
from domain.times import to_second


class ServiceOrder(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /v1/services`: order hosting for a customer."""

    customer_id: uuid.UUID
    plan: Annotated[str, msgspec.Meta(description="the plan's code", examples=["basic"])]
    domain: Annotated[str, msgspec.Meta(min_length=3, max_length=253, examples=["example.com.br"])]
    region: Annotated[str, msgspec.Meta(min_length=1, max_length=32, examples=["us"])]
    billing_cycle: Literal["monthly", "quarterly", "semiannual", "annual"]
    username: Annotated[str, msgspec.Meta(max_length=16, description=(
        "WHM username; chosen by hostq if absent. WHM's rules: lower-case letters and digits, starting with a "
        "letter, not 'test...' nor '...assword', not a name WHM keeps for the system (root, mysql, ...)"))] | None = None
    provision: Annotated[Literal["now", "on_payment"], msgspec.Meta(
        description="'now' provisions at once. 'on_payment' (the contract's default) needs billing, which this "
                    "version does not have yet: such orders are refused with 400 until billing ships.")] = "on_payment"


class Service(msgspec.Struct):
    """A hosting service and where it lives."""

    id: uuid.UUID
    customer_id: uuid.UUID
    plan: Annotated[str, msgspec.Meta(description="The plan's code", examples=["basic"])]
    domain: Annotated[str, msgspec.Meta(examples=["example.com.br"])]
    region: Annotated[str, msgspec.Meta(examples=["us"])]
    billing_cycle: Annotated[str, msgspec.Meta(description="monthly, quarterly, semiannual or annual",
                                               examples=["monthly"])]
    status: Annotated[str, msgspec.Meta(
        description="pending, provisioning, active, suspended, terminated or failed", examples=["provisioning"])]
    username: Annotated[str, msgspec.Meta(description="The WHM account's username")] | None
    server_id: Annotated[uuid.UUID, msgspec.Meta(description="The WHM server the service lives on")] | None
    next_due_date: Annotated[date, msgspec.Meta(description="In the tenant's time zone")] | None
    suspended_reason: Annotated[str, msgspec.Meta(
        description="reseller (a suspend asked through the API); non_payment once billing ships; null unless "
                    "suspended")] | None
    last_job_id: Annotated[uuid.UUID, msgspec.Meta(description="The latest job asked for this service")] | None
    created_at: datetime

    @classmethod
    def of(cls, row: ServiceRow) -> "Service":
        return cls(id=row.id, customer_id=row.customer_id, plan=row.plan_code, domain=row.domain, region=row.region,
                   billing_cycle=row.billing_cycle, status=row.status, username=row.username,
                   server_id=row.server_id, next_due_date=row.next_due_date, suspended_reason=row.suspended_reason,
                   last_job_id=row.last_job_id, created_at=to_second(row.created_at))


class Accepted(msgspec.Struct):
    """202: the job that does the work, and the service it works on."""

    job: Job
    service: Service


class ServiceList(msgspec.Struct):
    """A page of services, newest first."""

    data: list[Service]
    next_cursor: str | None


class NoFields(msgspec.Struct, forbid_unknown_fields=True):
    """The body of an action that takes no fields: none at all, or `{}`; anything else is 400, as everywhere."""


class SuspendRequest(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /v1/services/{id}/suspend`: an optional reason, shown on WHM."""

    reason: Annotated[str, msgspec.Meta(max_length=200)] | None = None


class ChangePlanRequest(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /v1/services/{id}/change-plan`: the new plan's code."""

    plan: Annotated[str, msgspec.Meta(min_length=1, max_length=64, examples=["pro"])]
