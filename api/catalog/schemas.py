"""Plan shapes of the public API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from domain.catalog.models import Plan as PlanRow
from domain.catalog.service import MAX_CENTS
from domain.times import to_second


class PlanCreate(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /v1/plans`: a plan sold per billing cycle, mapped to a WHM package."""

    code: Annotated[str, msgspec.Meta(min_length=1, max_length=64, examples=["basic"])]
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200, examples=["Basic"])]
    whm_package: Annotated[str, msgspec.Meta(
        min_length=1, max_length=64, examples=["basic"],
        description="the WHM package createacct gets, named as WHM shows it (a reseller's as owner_Name); no '/' or "
                    "control characters. Whether the server has it is known only at createacct: a job that fails "
                    "whm_rejected")]
    prices: Annotated[dict[str, int], msgspec.Meta(
        description=f"cents per billing cycle (monthly, quarterly, semiannual, annual), each 0 to {MAX_CENTS}",
        examples=[{"monthly": 6990, "annual": 69900}])]
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$", description="ISO 4217", examples=["BRL"])] = "BRL"


class Plan(msgspec.Struct):
    """A plan of the tenant's catalogue."""

    id: uuid.UUID
    code: Annotated[str, msgspec.Meta(examples=["basic"])]
    name: Annotated[str, msgspec.Meta(examples=["Basic"])]
    whm_package: Annotated[str, msgspec.Meta(examples=["basic"])]
    currency: Annotated[str, msgspec.Meta(examples=["BRL"])]
    prices: Annotated[dict[str, int], msgspec.Meta(description="Cents per billing cycle; a cycle absent here cannot "
                                                               "be ordered", examples=[{"monthly": 6990}])]
    created_at: datetime

    @classmethod
    def of(cls, row: PlanRow) -> "Plan":
        return cls(id=row.id, code=row.code, name=row.name, whm_package=row.whm_package, currency=row.currency,
                   prices=dict(row.prices), created_at=to_second(row.created_at))


class PlanList(msgspec.Struct):
    """A page of plans, newest first."""

    data: list[Plan]
    next_cursor: str | None
