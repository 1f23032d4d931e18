"""X-Request-Id: echoed when the client sends a sane one, else generated; one per request."""

from __future__ import annotations

import secrets

from litestar.types import Scope

_KEY = "hostq.request_id"


def request_id(scope: Scope) -> str:
    """The request's id, fixed on first use."""
    value = scope.get(_KEY)
    if value is None:
        value = None
        for name, raw in scope.get("headers", ()):
            if name == b"x-request-id":
                text = raw.decode("latin-1")
                if 0 < len(text) <= 128 and text.isprintable() and text.isascii():
                    value = text
                break
        value = value or "req_" + secrets.token_hex(12)
        scope[_KEY] = value  # type: ignore[literal-required]
    return value
