"""A reseller's customers (the end customers who buy hosting)."""

from __future__ import annotations

import uuid

from datetime import datetime

from sqlalchemy import ARRAY, DateTime, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from domain.db import Base


class Customer(Base):
    """An end customer of one tenant."""

    __tablename__ = "customers"
    __table_args__ = (UniqueConstraint("tenant_id", "external_id"),
                      Index("ix_customers_tenant_id", "tenant_id", "id"))  # a tenant's list, newest first (0015)

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("tenants.id"))
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(20))
    document: Mapped[str | None] = mapped_column(String(14))
    channels: Mapped[list[str]] = mapped_column(ARRAY(Text))
    external_id: Mapped[str | None] = mapped_column(String(200))
    # Set when the personal fields were erased (LGPD); the row stays for invoices and payments.
    erased_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
