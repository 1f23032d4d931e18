"""create_app(settings) -> Litestar: routes, auth, problems, headers, OpenAPI."""

from __future__ import annotations

import gc

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, YamlRenderPlugin
from litestar.types import Message, Scope

from api import deps, openapi, problems, strict_request
from api.access_log import STATUS_KEY
from api.auth import MAX_BODY, RATE_LIMIT_HEADERS
from api.catalog.controller import PlanController
from api.cors import CORS_HEADERS
from api.customers.controller import CustomerController
from api.health import live, ready
from api.edge import V1Edge
from api.fallbacks import add_fallbacks
from api.jobs.controller import JobController
from api.request_ids import request_id
from api.resources import Resources
from api.services.controller import ProvisionController, ServiceController
from api.tenant.controller import TenantController
from domain.settings import Settings

DESCRIPTION = """\
The hostq reseller API: your customers, your plans, the hosting services you sell them, and the jobs that do
the slow work (WHM provisioning). JSON in and out (`application/json`, UTF-8); ids are UUIDs, times RFC 3339
in UTC to the whole second (`2026-11-22T15:04:05Z`), money integer cents with an ISO 4217 `currency`.

## Authentication

Every `/v1` request is signed with the key's signing secret (never sent):

    Authorization: Bearer <api_key>
    X-Timestamp: <unix seconds>
    X-Signature: v1=<hex HMAC-SHA256(signing_secret, "<X-Timestamp>.<METHOD>.<path?query>.<raw body>")>

The path is signed with its query string exactly as sent, the body byte for byte (empty when there is none).
The hex digest may be in either case. During a secret rotation `X-Signature` may carry several comma-separated
`v1=` values (or several `X-Signature` lines, read as one line of their values joined by commas); one valid value
is enough. A missing or wrong key or signature, two `Authorization` or `X-Timestamp` lines that differ, or a
timestamp more than 300 s from server time, is 401 `unauthenticated` (with `WWW-Authenticate: Bearer`), checked
before anything else (whatever the body or path). A key lacking the operation's
scope is 403 `forbidden`. A body over 1 MiB is 413 `payload_too_large`, checked even before authentication.

## Tenancy

The key decides the tenant, and a tenant sees only its own rows. An id that belongs to another tenant answers
404 `not_found`, exactly as an id that does not exist (and as a value that is not a UUID). An id as a list's filter
(`customer_id`, `resource_id`) that is not a UUID is 400 `validation_error`; another tenant's matches nothing.

## Requests, answers and jobs

A request body is read as JSON whatever its `Content-Type` says (send `application/json`). Request bodies are
strict: an unknown field, a wrong type (a number sent as a string too) or a value outside its
rule is 400 `validation_error`, and so is a body sent with a GET or DELETE (none takes one), a query parameter
the route does not take (a misspelt filter never widens a list) or one given twice. Slow work answers
`202 Accepted` with the job and `Location: /v1/jobs/<id>`; poll the job until it is `succeeded`, `failed` or
`cancelled`. Asking for an action on a service while the same kind of
job is in flight for it returns that job (202, same id), never a second one.

Every response carries `X-Request-Id`: yours when you send one of 1..128 printable ASCII characters, else
generated. It is in every problem body and log line and carried into every job the request causes.

## Pagination

Lists are newest first. `limit` is 1..200 (default 50; outside that, 400). The answer is
`{"data": [...], "next_cursor": "..." | null}`: pass `next_cursor` back as `cursor` for the next page; `null`
means the last page. Cursors are opaque (an invalid one is 400) and pages are keyset-based, so rows created
while you page never shift or repeat what you have seen.

## Errors

Errors are `application/problem+json` (RFC 9457):

    {"type": "https://hostq.dev/problems/validation", "title": "Validation failed", "status": 400,
     "detail": "domain: not a valid domain", "code": "validation_error", "request_id": "req_...",
     "errors": [{"field": "domain", "message": "not a valid domain"}]}

Branch on `code`: 400 `validation_error`, 401 `unauthenticated`, 403 `forbidden`, 404 `not_found`, 409
`conflict` or `idempotency_in_flight`, 413 `payload_too_large`, 422 `invalid_state` (the resource's state does
not allow the action), `no_capacity` (every server in the region is full or disabled; an unknown region is 400) or
`idempotency_key_reused`, 429 `rate_limited`, 500 `internal_error` (never with a stack trace), 503
`unavailable` (a dependency is down; with `Retry-After`). Each operation lists the ones it can answer.

## Rate limits

Per tenant, N requests a minute (its `rate_limit`, default 600): a bucket of N tokens refilled at N a minute,
shared by every API process, so a burst of N passes and the next requests within the minute get 429
`rate_limited`. Every authenticated response carries `X-RateLimit-Limit` (N), `X-RateLimit-Remaining`
(requests that would pass if sent now) and `X-RateLimit-Reset`: unix seconds, rounded up, at which the bucket
is full again, i.e. when Remaining is back to Limit if nothing more is sent. A 429 has `Remaining: 0` and
`Retry-After`: whole seconds until one more request would pass. 401 and 413 answers, given before the tenant
is known, carry none of these; nor do answers while the limiter's store is unreachable (requests are then
let through rather than refused).

## Idempotency

Any `POST` may carry `Idempotency-Key: <1..255 printable ASCII characters>` (anything else is 400), scoped
to the tenant and kept at least 24 h from its first use:

- the same key with the same method, path (with query) and body replays the first answer, status and body
  (and its `Location`), with `Idempotent-Replayed: true`: no second effect, no second job;
- the same key with a different method, path or body is 422 `idempotency_key_reused`;
- the same key while the first request is still being processed is 409 `idempotency_in_flight`, with
  `Retry-After` (it may first wait up to 100 ms for the first request, and then replay its answer). A first request still unfinished after 60 s (its process probably died, perhaps after
  committing) keeps answering 409, without `Retry-After`, until the key expires: its outcome is unknown, so
  check the resource before retrying with a new key;
- 2xx and 4xx answers are stored and replayed; a 5xx is not, nor a 408 or 429: retry with the same key.
  Answers given before the key is looked at are not stored either: 401, 403 (the key lacks the scope) and 413.

As at Stripe, only a `POST` takes an `Idempotency-Key`: on `GET`, `PATCH` and `DELETE` the header is ignored (a
GET changes nothing; a PATCH sets values, so sending it again sets them again; a DELETE of a deleted resource
is 204 again).
"""


#: A strict Content-Security-Policy for the HTML the API may answer (api-v1.md, "Edge behaviour"): none of it
#: may load, run or frame anything.
_HTML_POLICY = (b"content-security-policy", b"default-src 'none'; base-uri 'none'; form-action 'none'; "
                b"frame-ancestors 'none'")


def _headers(settings: Settings):
    static = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
    if settings.production:
        static.append((b"strict-transport-security", b"max-age=63072000; includeSubDomains"))

    async def before_send(message: Message, scope: Scope) -> None:
        if message["type"] == "http.response.start":
            scope[STATUS_KEY] = message["status"]  # type: ignore[literal-required]  # for the access log
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"server"]
            headers += static + [(b"x-request-id", request_id(scope).encode())]
            headers += scope.get(RATE_LIMIT_HEADERS, ())  # type: ignore[call-overload]  # set by auth when allowed
            headers += scope.get(CORS_HEADERS, ())  # type: ignore[call-overload]  # a 401 or 413: api/cors.py
            if any(k.lower() == b"content-type" and v.startswith(b"text/html") for k, v in headers):
                headers.append(_HTML_POLICY)  # no page of the API runs scripts or loads anything
            message["headers"] = headers

    return before_send


def create_app(settings: Settings, resources: Resources | None = None) -> Litestar:
    """The API app; `resources` may be given (tests), else opened at start-up."""

    async def startup(app: Litestar) -> None:
        if getattr(app.state, "resources", None) is None:
            app.state.resources = Resources.open(settings)
        # What start-up built (modules, routes, OpenAPI) lives as long as the process: keep it out of the
        # collector's full passes, which otherwise rescan it and pause requests (the p99 under load).
        gc.collect()
        gc.freeze()

    async def shutdown(app: Litestar) -> None:
        await app.state.resources.close()

    v1 = Router(path="/", route_handlers=[CustomerController, PlanController, ServiceController, ProvisionController,
                                    JobController, TenantController],
                middleware=[V1Edge()], security=[{"signedRequest": []}], before_request=strict_request.check)
    add_fallbacks(v1)  # unknown /v1 paths and methods are authenticated too (401 before their 404 or 405)
    app = Litestar(
        route_handlers=[v1, live, ready],
        dependencies={"session": Provide(deps.provide_session), "caller": Provide(deps.provide_principal),
                      "request_id": Provide(deps.provide_request_id), "settings": Provide(deps.provide_settings)},
        exception_handlers={Exception: problems.handle},
        before_send=[_headers(settings)],
        on_startup=[startup],
        on_shutdown=[shutdown],
        state=State({"resources": resources}),
        request_max_body_size=MAX_BODY,
        # The document only, as JSON and YAML: Litestar's HTML viewers load their scripts from a CDN and inline the
        # document in a script, which a strict Content-Security-Policy (api-v1.md) would refuse.
        openapi_config=OpenAPIConfig(title="hostq API", version="1.0.0", description=DESCRIPTION, path="/schema",
                                     components=openapi.COMPONENTS,
                                     render_plugins=[JsonRenderPlugin(), YamlRenderPlugin()]),
        debug=False,
    )
    openapi.note_scopes(app)
    strict_request.prepare(app)
    return app
