"""Authentication before anything else, unknown routes included (api-v1.md, "Edge behaviour").

Litestar answers a path it does not know (404) or a method a path does not take (405) while routing, before
any route middleware runs, so such a /v1 request would get its 404 or 405 unsigned. These handlers take
those requests inside the /v1 router instead, behind V1Edge: unsigned, they are 401 like any other; signed,
they are the same 404 `not_found` or 405 (with `Allow`), rate-limited and with the rate-limit headers, as
Stripe answers them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from litestar import Request, Router, route
from litestar.exceptions import MethodNotAllowedException, NotFoundException
from litestar.routes import HTTPRoute
from litestar.types import Receive, Scope, Send

#: The methods a /v1 request may come with; OPTIONS is Litestar's own (CORS preflight, api/cors.py). No route
#: takes HEAD: signed, it is a 405 naming the route's methods.
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")


#: `opt=` key of a /v1 path's OPTIONS handler: the path's methods, for `answer_options`.
ALLOW_OPT = "hostq.allow"


async def answer_options(scope: Scope, receive: Receive, send: Send) -> None:
    """A signed OPTIONS (a preflight, with an Origin, is api/cors.py's): 204 with `Allow` naming the path's methods,
    which Litestar's own handler gets wrong on a path whose methods come from several controllers or fallbacks."""
    allow = scope["route_handler"].opt[ALLOW_OPT]  # type: ignore[typeddict-item]
    if allow is None:  # a path no route has: as any other method on it
        raise NotFoundException(f"no route {scope['path']}")
    await send({"type": "http.response.start", "status": 204, "headers": [(b"allow", allow.encode())]})
    await send({"type": "http.response.body", "body": b""})


def _unknown_route(rest: str, request: Request) -> None:
    raise NotFoundException(f"no route {request.url.path}")  # `rest` is only what follows the catch-all's prefix


def _v1_itself() -> None:
    raise NotFoundException("no route /v1: every route is below it (see /schema/openapi.json)")


def _not_allowed(allowed: list[str]) -> Callable[[], Awaitable[None]]:
    async def refuse() -> None:
        raise MethodNotAllowedException("this route does not take that method",
                                        headers={"Allow": ", ".join(allowed)})
    return refuse


def add_fallbacks(v1: Router) -> None:
    """Register, on the /v1 router, a 405 for each method a route lacks and a 404 for every unknown path.

    Litestar's router does not backtrack: `/v1/customers/x/nothing` goes down the `/v1/customers/{id}` branch
    and stops there, so known routes get a catch-all below them too, besides `/v1/{rest:path}`; but not one
    with a parameter right below it (`/v1/customers`), where the catch-all would take that parameter's place.
    """
    known = [r for r in v1.routes if isinstance(r, HTTPRoute) and r.path.startswith("/v1")]
    for existing in known:
        taken = sorted(set(existing.methods) - {"OPTIONS", "HEAD"})
        for handler in existing.route_handlers:
            if "OPTIONS" in handler.http_methods:  # Litestar's own, whose Allow names only some of the methods
                handler.opt[ALLOW_OPT] = ", ".join([*taken, "OPTIONS"])
        missing = [m for m in METHODS if m not in taken]
        if missing:
            v1.register(route(existing.path, http_method=missing, include_in_schema=False)(_not_allowed(taken)))
    paths = [r.path for r in known]
    v1.register(route("/v1", http_method=list(METHODS), include_in_schema=False, sync_to_thread=False)(_v1_itself))
    for prefix in ["/v1", *paths]:
        if any(p.startswith(f"{prefix}/{{") for p in paths):
            continue
        v1.register(route(f"{prefix}/{{rest:path}}", http_method=list(METHODS), include_in_schema=False,
                          sync_to_thread=False)(_unknown_route))
    for unknown in v1.routes:  # their OPTIONS handlers (Litestar's) answer 404, as their other methods do
        if isinstance(unknown, HTTPRoute) and (unknown.path == "/v1" or unknown.path.endswith("{rest:path}")):
            for handler in unknown.route_handlers:
                if "OPTIONS" in handler.http_methods:
                    handler.opt[ALLOW_OPT] = None
