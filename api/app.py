"""create_app(settings) -> Litestar: routes, auth, problems, headers, OpenAPI."""

from __future__ import annotations

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import Message, Scope

from api import deps, problems
from api.auth import MAX_BODY, SignatureAuthMiddleware
from api.catalog.controller import PlanController
from api.customers.controller import CustomerController
from api.health import live, ready
from api.cors import TenantCorsMiddleware
from api.idempotency import IdempotencyMiddleware
from api.jobs.controller import JobController
from api.request_ids import request_id
from api.resources import Resources
from api.services.controller import ProvisionController, ServiceController
from api.tenant.controller import TenantController
from domain.settings import Settings

DESCRIPTION = """\
The hostq reseller API. Every `/v1` request is signed:

    Authorization: Bearer <api_key>
    X-Timestamp: <unix seconds>
    X-Signature: v1=<hex HMAC-SHA256(signing_secret, "<X-Timestamp>.<METHOD>.<path?query>.<raw body>")>

Timestamps more than 300 s from server time are refused (401). Errors are `application/problem+json`
with a machine-readable `code` and the `request_id`. Slow work answers `202` with a job and
`Location: /v1/jobs/<id>`. Lists are newest first, paginated with `limit` (1..200) and the opaque
`next_cursor`.
"""


def _headers(settings: Settings):
    static = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
    if settings.production:
        static.append((b"strict-transport-security", b"max-age=63072000; includeSubDomains"))

    async def before_send(message: Message, scope: Scope) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"server"]
            headers += static + [(b"x-request-id", request_id(scope).encode())]
            message["headers"] = headers

    return before_send


def create_app(settings: Settings, resources: Resources | None = None) -> Litestar:
    """The API app; `resources` may be given (tests), else opened at start-up."""

    async def startup(app: Litestar) -> None:
        if getattr(app.state, "resources", None) is None:
            app.state.resources = Resources.open(settings)

    async def shutdown(app: Litestar) -> None:
        await app.state.resources.close()

    v1 = Router(path="/", route_handlers=[CustomerController, PlanController, ServiceController, ProvisionController,
                                    JobController, TenantController],
                middleware=[TenantCorsMiddleware(), SignatureAuthMiddleware(), IdempotencyMiddleware()], security=[{"signedRequest": []}])
    return Litestar(
        route_handlers=[v1, live, ready],
        dependencies={"session": Provide(deps.provide_session), "caller": Provide(deps.provide_principal),
                      "request_id": Provide(deps.provide_request_id), "settings": Provide(deps.provide_settings)},
        exception_handlers={Exception: problems.handle},
        before_send=[_headers(settings)],
        on_startup=[startup],
        on_shutdown=[shutdown],
        state=State({"resources": resources}),
        request_max_body_size=MAX_BODY,
        openapi_config=OpenAPIConfig(
            title="hostq API", version="1.0.0", description=DESCRIPTION, path="/schema",
            components=Components(security_schemes={"signedRequest": SecurityScheme(
                type="http", scheme="bearer",
                description="API key as Bearer token, plus X-Timestamp and X-Signature headers (see above)")})),
        debug=False,
    )
