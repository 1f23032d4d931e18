"""Tenants (resellers) and their API credentials."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ARRAY, DateTime, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from domain.db import Base


class Tenant(Base):
    """A reseller: its brand, its limits and its calendar."""

    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    sender: Mapped[str | None] = mapped_column(String(320))
    support_email: Mapped[str | None] = mapped_column(String(320))
    rate_limit: Mapped[int] = mapped_column(Integer, default=600)
    timezone: Mapped[str] = mapped_column(String(64), default="America/Sao_Paulo")
    lead_days: Mapped[int] = mapped_column(Integer, default=14)
    settings: Mapped[dict] = mapped_column(JSONB, default=dict)


class ApiKey(Base):
    """A credential: the hash of the public key, and the signing secret encrypted with the KEK."""

    __tablename__ = "api_keys"

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("tenants.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(24))
    secret_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    # A second secret, valid with the first until previous_expires_at (rotation grace).
    previous_secret_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    previous_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
