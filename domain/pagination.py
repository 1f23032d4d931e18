"""Keyset pagination over UUIDv7 ids: newest first, the cursor is the last id seen."""

from __future__ import annotations

import base64
import uuid
from typing import Any

from sqlalchemy import Select

from domain.errors import ValidationFailed

MAX_LIMIT = 200


def encode_cursor(last_id: uuid.UUID) -> str:
    """An opaque cursor for the page after `last_id`."""
    return base64.urlsafe_b64encode(last_id.bytes).decode().rstrip("=")


def decode_cursor(cursor: str) -> uuid.UUID:
    """The id inside a cursor, or ValidationFailed."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return uuid.UUID(bytes=raw)
    except (ValueError, TypeError):
        raise ValidationFailed("cursor is not valid", errors=[{"field": "cursor", "message": "not a cursor"}]) from None


def check_limit(limit: int) -> int:
    """`limit` if within 1..200, else ValidationFailed."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailed("limit must be between 1 and 200", errors=[{"field": "limit", "message": "1..200"}])
    return limit


def paginate(stmt: Select, id_column: Any, limit: int, cursor: str | None) -> Select:
    """Newest-first page of `stmt`, one extra row to know whether another page exists."""
    if cursor:
        stmt = stmt.where(id_column < decode_cursor(cursor))
    return stmt.order_by(id_column.desc()).limit(check_limit(limit) + 1)


def page(rows: list, limit: int) -> tuple[list, str | None]:
    """The rows of this page and the cursor of the next (None on the last page)."""
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, encode_cursor(rows[-1].id)
    return rows, None
