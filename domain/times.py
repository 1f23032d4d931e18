"""Times as hostq shows them: RFC 3339 in UTC with `Z` (api-v1.md), wherever they are printed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import msgspec


def to_second(value: datetime | None, *, up: bool = False) -> datetime | None:
    """`value` without its fraction of a second: the API shows whole seconds, as api-v1.md's example
    (`2026-11-22T15:04:05Z`) and Stripe's timestamps do; a client that parses exactly that form must not fail.

    `up`: to the next whole second, for a time from which something may happen (a retry is due, a wait ends), so
    that a client acting at the time shown is never early."""
    if value is None:
        return None
    whole = value.replace(microsecond=0)
    return whole + timedelta(seconds=1) if up and value.microsecond else whole


def rfc3339(value: datetime | None, *, up: bool = False) -> str | None:
    """`value` in UTC as the API's JSON has it (`2026-11-22T15:04:05Z`); None stays None. `up`: see to_second.

    The API's bodies are msgspec Structs whose datetimes (each passed through to_second) msgspec encodes: its own
    conversion is used here, so the command line and the logs cannot drift from the API's form.
    """
    return msgspec.to_builtins(to_second(value.astimezone(timezone.utc), up=up)) if value is not None else None
