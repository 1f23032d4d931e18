"""CORS per tenant: no origin is allowed unless a tenant lists it (PATCH /v1/tenant `allowed_origins`).

A preflight carries no credentials, so it is answered for an origin that some tenant allows; the real
request then carries CORS headers only when the authenticated tenant allows that origin, so a browser
exposes a tenant's responses to that tenant's origins and no others. An answer given before any tenant is known
(401, 413) says nothing of any tenant: it carries them for an origin some tenant allows, as a preflight, so that a
browser app can read why it was refused.
"""

from __future__ import annotations

import time

from litestar import Request
from litestar.exceptions import HTTPException
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import AUTH_KEY
from domain.outages import is_outage
from domain.tenants.service import origin_allowed_anywhere

ALLOW_HEADERS = b"authorization, content-type, x-timestamp, x-signature, idempotency-key, x-request-id"
EXPOSE_HEADERS = (b"x-request-id, x-ratelimit-limit, x-ratelimit-remaining, x-ratelimit-reset, retry-after, "
                  b"location, idempotent-replayed, www-authenticate")
#: How long a process remembers a preflight's answer: an allowed origin for CACHE_S (the real responses' headers
#: follow the tenant's list at once, so a removed origin gets nothing readable meanwhile), a refused one for
#: REFUSED_CACHE_S only, so that an origin a tenant has just listed passes its browser's preflight within seconds.
CACHE_S = 30.0
REFUSED_CACHE_S = 2.0
#: Scope key of the CORS headers of an answer given before any tenant was known, added by api/app.py's before_send.
CORS_HEADERS = "hostq.cors_headers"
#: The answers given before the caller is known: the signature refused (401), a body too large (413).
_BEFORE_ANY_TENANT = frozenset((401, 413))
#: Origins whose answer a process remembers: preflights need no credentials, so anyone can send new ones.
MAX_ORIGINS = 10_000


def _readable_by(origin: bytes) -> list[tuple[bytes, bytes]]:
    """The headers that let a browser at `origin` read an answer, and its headers that scripts need."""
    return [(b"access-control-allow-origin", origin), (b"access-control-expose-headers", EXPOSE_HEADERS),
            (b"vary", b"Origin")]


def _origin(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"origin":
            return value
    return None


class TenantCorsMiddleware(ASGIMiddleware):
    """Answer preflights before authentication; add CORS headers to responses for the tenant's origins."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[bool, float]] = {}

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        origin = _origin(scope)
        if origin is None:
            await next_app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            await self._preflight(scope, origin, send)
            return

        async def with_cors(message: Message) -> None:
            caller = scope.get(AUTH_KEY)  # type: ignore[call-overload]
            if message["type"] == "http.response.start" and caller is not None \
                    and origin.decode("latin-1") in caller.allowed_origins:
                message["headers"] = [*message.get("headers", []), *_readable_by(origin)]
            await send(message)

        try:
            await next_app(scope, receive, with_cors)
        except HTTPException as exc:
            # Refused before any tenant is known: Litestar answers it outside this middleware, through the app's
            # before_send hook (api/app.py), which adds these.
            if exc.status_code in _BEFORE_ANY_TENANT and await self._allowed_if_known(scope, origin):
                scope[CORS_HEADERS] = _readable_by(origin)  # type: ignore[literal-required]
            raise

    async def _allowed_if_known(self, scope: Scope, origin: bytes) -> bool:
        """Whether some tenant allows `origin`; False when that cannot be looked up (the answer goes out as it
        is)."""
        try:
            return await self._allowed(scope, origin.decode("latin-1"))
        except Exception as exc:  # only an outage is let pass: anything else is raised again
            if not is_outage(exc):
                raise
            return False

    async def _allowed(self, scope: Scope, origin: str) -> bool:
        cached = self._known.get(origin)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        resources = Request(scope).app.state.resources
        async with resources.sessions() as session:
            allowed = await origin_allowed_anywhere(session, origin)
        if len(self._known) >= MAX_ORIGINS:  # the oldest tenth goes (a dict keeps insertion order)
            for stale in list(self._known)[: MAX_ORIGINS // 10]:
                del self._known[stale]
        self._known.pop(origin, None)
        self._known[origin] = (allowed, time.monotonic() + (CACHE_S if allowed else REFUSED_CACHE_S))
        return allowed

    async def _preflight(self, scope: Scope, origin: bytes, send: Send) -> None:
        headers = [(b"vary", b"Origin"), (b"content-length", b"0")]
        if await self._allowed(scope, origin.decode("latin-1")):
            headers += [(b"access-control-allow-origin", origin),
                        (b"access-control-allow-methods", b"GET, POST, PATCH, DELETE"),
                        (b"access-control-allow-headers", ALLOW_HEADERS), (b"access-control-max-age", b"600")]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
