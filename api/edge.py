"""The /v1 router's one middleware: CORS, then signature and rate limit, then Idempotency-Key.

The three stay separate classes (api/cors.py, api/auth.py, api/idempotency.py) but run as one Litestar
middleware layer: each layer costs Litestar a wrapper and its exclusion checks on every request.
"""

from __future__ import annotations

from functools import partial

from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from api.auth import SignatureAuthMiddleware
from api.cors import TenantCorsMiddleware
from api.fallbacks import ALLOW_OPT, answer_options
from api.idempotency import IdempotencyMiddleware


class V1Edge(ASGIMiddleware):
    """Every /v1 request passes CORS, authentication (and the rate limit), then idempotency."""

    def __init__(self) -> None:
        self.cors, self.auth, self.idempotency = TenantCorsMiddleware(), SignatureAuthMiddleware(), \
            IdempotencyMiddleware()

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if scope["method"] == "OPTIONS" and ALLOW_OPT in scope["route_handler"].opt:  # type: ignore[typeddict-item]
            next_app = answer_options
        idempotent = partial(self.idempotency.handle, next_app=next_app)
        authenticated = partial(self.auth.handle, next_app=idempotent)
        await self.cors.handle(scope, receive, send, authenticated)
