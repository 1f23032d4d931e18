"""Services: a customer's hosting account, from order to termination."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import Date, DateTime, ForeignKey, Index, String, func, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from domain.db import Base


class Service(Base):
    """An ordered hosting service; `username` is fixed before the first WHM call."""

    __tablename__ = "services"
    __table_args__ = (
        # One account per domain until terminated (a failed one may exist on WHM): WHM refuses a domain twice.
        Index("uq_services_live_domain", text("lower(domain)"), unique=True,
              postgresql_where=text("status <> 'terminated'")),
        # A username is unique on its server by its first 8 characters (WHM's rule).
        Index("uq_services_server_user8", "server_id", text("left(username, 8)"), unique=True,
              postgresql_where=text("username IS NOT NULL AND status <> 'terminated'")),
        Index("ix_services_tenant_id", "tenant_id", "id"),  # a tenant's list, newest first (migration 0015)
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("tenants.id"))
    customer_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("customers.id"), index=True)
    plan_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("plans.id"))
    plan_code: Mapped[str] = mapped_column(String(64))
    domain: Mapped[str] = mapped_column(String(253))
    region: Mapped[str] = mapped_column(String(32))
    billing_cycle: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    username: Mapped[str | None] = mapped_column(String(16))
    server_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("whm_servers.id"), index=True)
    next_due_date: Mapped[date | None] = mapped_column(Date)
    suspended_reason: Mapped[str | None] = mapped_column(String(16))
    last_job_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    # Set just before the first createacct (or when an existing account is adopted): from then on WHM may hold an
    # account of this service, so a retry must adopt, never rename, and a terminate must ask WHM.
    create_attempted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())
