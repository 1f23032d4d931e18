"""The request signature of api-v1.md: pure rules, no I/O."""

from __future__ import annotations

import hashlib
import hmac

MAX_SKEW_S = 300


def signed_payload(timestamp: str, method: str, path_with_query: str, body: bytes) -> bytes:
    """`<timestamp>.<METHOD>.<path?query>.<raw body>` as bytes."""
    return b".".join([timestamp.encode(), method.upper().encode(), path_with_query.encode(), body])


def sign(secret: str, payload: bytes) -> str:
    """Hex HMAC-SHA256 of the payload under the signing secret."""
    return hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: str, method: str, path_with_query: str, body: bytes) -> str:
    """The `X-Signature` value a client sends."""
    return "v1=" + sign(secret, signed_payload(timestamp, method, path_with_query, body))


def candidate_signatures(header: str) -> list[str]:
    """The `v1=` values of an `X-Signature` header (several during a rotation), in lower case: hex is hex in either
    case (.NET's and Java's hex encoders write upper case)."""
    values = []
    for part in header.split(","):
        scheme, _, value = part.strip().partition("=")
        if scheme == "v1" and value and value.isascii():  # (compare_digest refuses other text; no digest is)
            values.append(value.lower())
    return values


def timestamp_fresh(timestamp: str, now: float, max_skew: int = MAX_SKEW_S) -> bool:
    """Whole unix seconds within `max_skew` of now, in whole seconds too, so the window is the same on both
    sides (replay protection)."""
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return False
    return abs(int(timestamp) - int(now)) <= max_skew


def signature_valid(secrets: list[str], header: str, payload: bytes) -> bool:
    """True when any `v1=` value matches any secret; every comparison is constant time."""
    candidates = candidate_signatures(header)
    ok = False
    for secret in secrets:
        expected = sign(secret, payload)
        for candidate in candidates:
            ok |= hmac.compare_digest(expected, candidate)
    return ok
