"""Time-ordered ids (UUIDv7) for every row."""

import uuid

import uuid6


def new_id() -> uuid.UUID:
    """A fresh UUIDv7 as a standard uuid.UUID."""
    return uuid.UUID(bytes=uuid6.uuid7().bytes)


def parse_id(value: str) -> uuid.UUID | None:
    """The UUID in `value`, or None when it is not one (treated as 'not found')."""
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None
