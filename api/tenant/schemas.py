"""The tenant's brand and settings."""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec

from domain.tenants.models import Tenant as TenantRow


LEAD_DAYS = ("Days before the due date that renewal invoices are to go out: stored; used once billing ships (this "
             "version issues no invoices)")


class TenantProfile(msgspec.Struct):
    """What every customer-facing message carries, and the tenant's calendar and limits."""

    id: uuid.UUID
    name: Annotated[str, msgspec.Meta(examples=["Brand Hosting"])]
    slug: Annotated[str, msgspec.Meta(examples=["brand-hosting"])]
    sender: str | None
    support_email: str | None
    timezone: Annotated[str, msgspec.Meta(examples=["America/Sao_Paulo"])]
    lead_days: Annotated[int, msgspec.Meta(description=LEAD_DAYS)]
    rate_limit: Annotated[int, msgspec.Meta(description="Requests a minute for this tenant (X-RateLimit-Limit); set "
                                                        "by the platform operator", examples=[600])]
    allowed_origins: list[str]

    @classmethod
    def of(cls, row: TenantRow) -> "TenantProfile":
        return cls(id=row.id, name=row.name, slug=row.slug, sender=row.sender, support_email=row.support_email,
                   timezone=row.timezone, lead_days=row.lead_days, rate_limit=row.rate_limit,
                   allowed_origins=list((row.settings or {}).get("allowed_origins", [])))


class TenantPatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """`PATCH /v1/tenant`: only the fields given change. `rate_limit` is set by the platform operator."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | msgspec.UnsetType = msgspec.UNSET
    sender: Annotated[str, msgspec.Meta(
        max_length=320, examples=["Brand <billing@brand.example>"],
        description="The From of customer-facing e-mail, `Name <address>`: stored; this version sends no e-mail "
                    "yet")] | None | msgspec.UnsetType = msgspec.UNSET
    support_email: Annotated[str, msgspec.Meta(
        max_length=320, examples=["help@brand.example"])] | None | msgspec.UnsetType = msgspec.UNSET
    timezone: Annotated[str, msgspec.Meta(
        examples=["America/Sao_Paulo"],
        description="An IANA time zone: the tenant's calendar")] | msgspec.UnsetType = msgspec.UNSET
    # `extra` restates ge=0: Litestar leaves a zero bound out of the document.
    lead_days: Annotated[int, msgspec.Meta(
        ge=0, le=90, description=LEAD_DAYS,
        extra_json_schema={"extra": {"minimum": 0}})] | msgspec.UnsetType = msgspec.UNSET
    allowed_origins: Annotated[list[str], msgspec.Meta(
        max_length=20, description="CORS origins allowed to call the API from a browser",
        examples=[["https://panel.brand.example"]])] | msgspec.UnsetType = msgspec.UNSET

    def changes(self) -> dict:
        """The fields the client sent."""
        return {f: getattr(self, f) for f in self.__struct_fields__ if getattr(self, f) is not msgspec.UNSET}
