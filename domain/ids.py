"""Time-ordered ids (UUIDv7) for every row."""

import uuid

import uuid6

from domain.errors import ValidationFailed


def new_id() -> uuid.UUID:
    """A fresh UUIDv7 as a standard uuid.UUID."""
    return uuid.UUID(bytes=uuid6.uuid7().bytes)


def parse_id(value: str) -> uuid.UUID | None:
    """The UUID in `value`, or None when it is not one (treated as 'not found')."""
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None


def filter_id(value: str | None, field: str) -> uuid.UUID | None:
    """A list filter's id: None when not given; ValidationFailed naming `field` when it is not a UUID (a typo
    answered with an empty list would read as "none exist"), empty too (`?resource_id=`, an unset variable in the
    caller's code: every row would read as that one's)."""
    if value is None:
        return None
    if (found := parse_id(value)) is None:
        raise ValidationFailed(f"{field}: not an id", errors=[{"field": field, "message": "not an id (a UUID)"}])
    return found
