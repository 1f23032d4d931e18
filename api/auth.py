"""API key + HMAC signature (api-v1.md, 'Authentication'), rate limit, and the keys' scopes."""

from __future__ import annotations

import time

from litestar import Request
from litestar.exceptions import (ClientException, NotAuthorizedException, PermissionDeniedException,
                                 TooManyRequestsException)
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from domain.db import CURRENT_TENANT
from domain.tenants import signing
from api.principals import Cached
from api.problems import BODY_KEY, TOO_LARGE
from domain.crypto import hash_api_key
from domain.tenants.service import Principal, resolve_key

MAX_BODY = 1024 * 1024
AUTH_KEY = "hostq.principal"


def signed_target(scope: Scope) -> str:
    """The path with its query string, exactly as the client sent them."""
    path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    query = scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path


class SignatureAuthMiddleware(ASGIMiddleware):
    """Refuse oversized bodies (413), verify key, timestamp and signature (401), then the tenant's rate limit (429)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        wanted = _wanted_headers(scope)
        length = wanted.get(b"content-length", "")
        if length.isdigit() and int(length) > MAX_BODY:
            raise ClientException(TOO_LARGE, status_code=413)
        request: Request = Request(scope, receive)
        if scope["method"] in _BODILESS and not length and b"transfer-encoding" not in wanted:
            body = b""  # nothing was sent: spare reading the (empty) stream
        else:
            body = await request.body()  # cached in the connection state for the handler
            scope[BODY_KEY] = body  # type: ignore[literal-required]  # for api/problems.py
        presented = _presented(wanted)
        key_hash = hash_api_key(presented[0])
        caller, cached = await self._authenticate(request, scope, body, presented, key_hash)
        resources = scope["litestar_app"].state.resources
        limiter = resources.limiter
        decision = await limiter.hit(caller.tenant_id, caller.rate_limit, caller.key_id)
        if decision is None:
            # Redis cannot say what changed, now or (when it keeps its data) once it is back, since a change made
            # meanwhile could not bump its counter: trust no cached key from before.
            resources.principals.clear()
        if cached is not None and (decision is None or decision.generation != cached.generation):
            # The key or its tenant changed (or Redis cannot tell us): look it up again, and decide the
            # rate limit again under the fresh settings (this rare path takes a second token).
            resources.principals.drop(key_hash)
            caller = await self._from_database(request, scope, body, presented)
            if decision is not None:
                decision = await limiter.hit(caller.tenant_id, caller.rate_limit, caller.key_id)
            if decision is not None:
                resources.principals.put(key_hash, caller, decision.generation)
        elif cached is None and decision is not None:
            resources.principals.put(key_hash, caller, decision.generation)
        scope[AUTH_KEY] = caller  # type: ignore[literal-required]
        # Every database session of this request now sees this tenant's rows only (row-level security).
        token = CURRENT_TENANT.set(str(caller.tenant_id))
        try:
            if decision is None:  # Redis unreachable: fail open, without headers (see api/ratelimit.py)
                _refuse_body(scope, body, None)
                _check_scope(scope, caller, None)
                await next_app(scope, receive, send)
            elif not decision.allowed:
                raise TooManyRequestsException(f"over {decision.limit} requests a minute; retry after "
                                               f"{decision.retry_after} s", headers=decision.headers())
            else:
                headers = decision.headers()
                _refuse_body(scope, body, headers)
                _check_scope(scope, caller, headers)
                # Added to the response start by api/app.py's before_send hook, whoever answers.
                scope[RATE_LIMIT_HEADERS] = [(name.lower().encode(), value.encode())  # type: ignore[literal-required]
                                             for name, value in headers.items()]
                await next_app(scope, receive, send)
        finally:
            CURRENT_TENANT.reset(token)

    async def _authenticate(self, request: Request, scope: Scope, body: bytes, presented: tuple[str, str, str],
                            key_hash: str) -> tuple[Principal, Cached | None]:
        """The caller, from the cache when its secrets verify the signature, else from the database."""
        cached = request.app.state.resources.principals.get(key_hash)
        if cached is not None and _signed_by(cached.principal, scope, body, presented):
            return cached.principal, cached
        return await self._from_database(request, scope, body, presented), None

    async def _from_database(self, request: Request, scope: Scope, body: bytes,
                             presented: tuple[str, str, str]) -> Principal:
        resources = request.app.state.resources
        async with resources.sessions() as session:
            principal = await resolve_key(session, resources.settings.require_kek(), presented[0])
        if principal is None or not _signed_by(principal, scope, body, presented):
            raise _refused()
        return principal


REFUSED = "a valid API key and request signature are required"
#: A 401's challenge (RFC 9110, 11.6.1): the API key as a bearer token, and the request signed (README).
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="hostq", charset="UTF-8"'}


def _refused() -> NotAuthorizedException:
    return NotAuthorizedException(REFUSED, headers=CHALLENGE)


def _wanted_headers(scope: Scope) -> dict[bytes, str]:
    """The headers this middleware reads, in one pass over the request's headers.

    X-Signature given on several lines counts as one line of their values joined by commas (RFC 9110, 5.3), so any
    of them may be the valid one. An Authorization or X-Timestamp given twice with different values says nothing
    certain about the caller: it counts as absent (401)."""
    found: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        if name not in _WANTED:
            continue
        text = value.decode("latin-1")
        if name not in found:
            found[name] = text
        elif name == b"x-signature":
            found[name] = f"{found[name]},{text}"
        elif name in _SINGLE and found[name] != text:
            found[name] = _AMBIGUOUS
    return found


_AMBIGUOUS = ""  # what _presented refuses as a missing header
_SINGLE = frozenset((b"authorization", b"x-timestamp"))


_WANTED = frozenset((b"authorization", b"x-timestamp", b"x-signature", b"content-length", b"transfer-encoding"))
_BODILESS = frozenset(("GET", "HEAD", "DELETE", "OPTIONS"))
#: Scope key of this request's X-RateLimit-* headers (raw), added to the response by api/app.py.
RATE_LIMIT_HEADERS = "hostq.rate_limit_headers"


def _presented(wanted: dict[bytes, str]) -> tuple[str, str, str]:
    """(api key, timestamp, signature) from the headers; 401 when missing, malformed or stale."""
    authorization = wanted.get(b"authorization", "")
    timestamp = wanted.get(b"x-timestamp", "")
    signature = wanted.get(b"x-signature", "")
    scheme, _, api_key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not api_key or not signature or len(api_key) > 200:
        raise _refused()
    if not signing.timestamp_fresh(timestamp, time.time()):
        raise _refused()
    return api_key.strip(), timestamp, signature


def _signed_by(principal: Principal, scope: Scope, body: bytes, presented: tuple[str, str, str]) -> bool:
    target = signed_target(scope)
    payload = signing.signed_payload(presented[1], scope["method"], target, body)
    if signing.signature_valid(principal.secrets, presented[2], payload):
        return True
    # A request sent as `/v1/customers?` (an empty query) reaches us as `/v1/customers`: ASGI keeps no trace of the
    # bare "?", so a client that signed the path exactly as it sent it signed it with one.
    return not scope.get("query_string") and signing.signature_valid(
        principal.secrets, presented[2], signing.signed_payload(presented[1], scope["method"], f"{target}?", body))


def principal(request: Request) -> Principal:
    """The authenticated caller of this request (set by the middleware)."""
    return request.scope[AUTH_KEY]  # type: ignore[literal-required]


def requires(scope_name: str) -> dict[str, str]:
    """`opt=` of a route (or controller) whose key must carry `scope_name`, else 403.

    SignatureAuthMiddleware checks it right after authenticating. Not a Litestar guard: Litestar copies the
    route handler for every guard call, which costs more than the whole check.
    """
    return {SCOPE_OPT: scope_name}


SCOPE_OPT = "hostq.scope"


def _refuse_body(scope: Scope, body: bytes, headers: dict[str, str] | None) -> None:
    """400 for a body on a GET or DELETE (counted by the rate limit, as every authenticated request): no such
    route reads one; and the signed payload ends with the body after a "." that a path may also hold, so a signed
    GET of `?q=a.b` would verify as `?q=a` with the body `b.`."""
    if body and scope["method"] in _BODILESS:
        raise ClientException(f"a {scope['method']} request takes no body", status_code=400, headers=headers)


def _check_scope(scope: Scope, caller: Principal, headers: dict[str, str] | None) -> None:
    needed = scope["route_handler"].opt.get(SCOPE_OPT)  # type: ignore[typeddict-item]
    if needed is not None and needed not in caller.scopes:
        raise PermissionDeniedException(f"this key lacks the {needed!r} scope", headers=headers)
