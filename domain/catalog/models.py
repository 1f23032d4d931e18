"""The tenant's catalogue: plans mapped to WHM packages, priced per billing cycle."""

from __future__ import annotations

import uuid

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from domain.db import Base


class Plan(Base):
    """A sellable plan; `prices` maps a billing cycle to cents."""

    __tablename__ = "plans"
    __table_args__ = (UniqueConstraint("tenant_id", "code"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("tenants.id"), index=True)
    code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    whm_package: Mapped[str] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(3), default="BRL")
    prices: Mapped[dict[str, int]] = mapped_column(JSONB)
