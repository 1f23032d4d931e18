"""Pure rules of idempotency keys: what a valid key is, what "the same request" is, what is kept."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

MAX_KEY_LENGTH = 255

# Response headers that belong to the resource and are replayed; everything else (cookies, per-request ids,
# security headers added on the way out) is left to the replaying request.
KEPT_HEADERS = frozenset({b"content-type", b"location", b"content-language", b"link"})

# Transient answers that say "try again later": like a 5xx, they are not the request's outcome.
_NOT_KEPT_4XX = frozenset({408, 429})


def valid_key(key: str) -> bool:
    """1..255 printable ASCII characters (space included, control characters and non-ASCII refused)."""
    return 0 < len(key) <= MAX_KEY_LENGTH and all(" " <= ch <= "~" for ch in key)


def fingerprint(method: str, target: str, body: bytes) -> str:
    """sha256 hex of the method, the path with its query string, and the raw body."""
    digest = hashlib.sha256()
    digest.update(method.upper().encode("ascii"))
    digest.update(b"\n")
    digest.update(target.encode("latin-1"))
    digest.update(b"\n")
    digest.update(body)
    return digest.hexdigest()


def storable(status: int) -> bool:
    """2xx, 3xx and 4xx are the request's outcome and replayed; 5xx (and 408/429) let the client retry."""
    return 100 <= status < 500 and status not in _NOT_KEPT_4XX


def kept_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[list[str]]:
    """The allow-listed response headers, as JSON-friendly [name, value] pairs in their order."""
    return [[name.lower().decode("latin-1"), value.decode("latin-1")] for name, value in headers
            if name.lower() in KEPT_HEADERS]


REUSED = "reused"
REPLAY = "replay"
IN_FLIGHT = "in_flight"


def decide(stored_fingerprint: str, stored_state: str, request_fingerprint: str) -> str:
    """What to answer when the key is already taken: another request (422), a replay, or 409 in flight."""
    if stored_fingerprint != request_fingerprint:
        return REUSED
    return REPLAY if stored_state == "done" else IN_FLIGHT
