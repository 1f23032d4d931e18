"""The built-in webhook signature of integrations.md (Stripe's scheme): `t=<unix>,v1=<hex>[,v1=<hex>...]`.

signature = hex HMAC-SHA256(secret, "<t>.<raw body>"); a receiver accepts when any `v1` matches any of its
secrets (that is what lets a secret rotate) and the timestamp is at most TOLERANCE_S old. Pure functions.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "X-Hostq-Signature"
TOLERANCE_S = 300


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def signature_header(secrets: list[str], timestamp: int, body: bytes) -> str:
    """The header value for `body` sent at `timestamp`: one `v1` per secret (two while a secret rotates)."""
    if not secrets:
        raise ValueError("a webhook signature needs at least one secret")
    return ",".join([f"t={timestamp}", *(f"v1={_digest(secret, timestamp, body)}" for secret in secrets)])


def verify(secrets: list[str], header: str, body: bytes, now: float, tolerance_s: int = TOLERANCE_S) -> bool:
    """True when the header's timestamp is fresh and one of its `v1` values matches one of `secrets`."""
    timestamp, candidates = None, []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif key == "v1" and value and value.isascii():  # (compare_digest refuses other text; no digest is)
            candidates.append(value.lower())  # hex in either case
    if timestamp is None or not candidates or now - timestamp > tolerance_s or timestamp - now > tolerance_s:
        return False
    ok = False
    for secret in secrets:
        expected = _digest(secret, timestamp, body)
        for candidate in candidates:
            ok |= hmac.compare_digest(expected, candidate)
    return ok
