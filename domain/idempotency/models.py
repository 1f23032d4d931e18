"""The idempotency_keys table: one row per (tenant, key), claimed before the request runs."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from domain.db import Base

IN_FLIGHT = "in_flight"
DONE = "done"


class IdempotencyKey(Base):
    """A tenant's key: `in_flight` while its first request runs, then `done` with the response to replay."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("tenant_id", "key"),
        CheckConstraint("state IN ('in_flight', 'done')", name="state"),
        Index("ix_idempotency_keys_created_at", "created_at"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    # sha256 hex of method, path with query, and raw body: the "same request" test.
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    # After this an in_flight row is suspect: its process may have died. It is taken over only if its
    # request never committed (committed_at NULL); a committed one is never run again.
    locked_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Set inside the request's own business transaction: the effect happened exactly when this is set.
    committed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    response_status: Mapped[int | None] = mapped_column(Integer)
    # [[name, value], ...] of the allow-listed headers only (never Set-Cookie).
    response_headers: Mapped[list | None] = mapped_column(JSONB)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
