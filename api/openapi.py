"""The shared parts of the published contract (api-v1.md): the Problem schema, the problem responses of each
/v1 operation, and the headers that every /v1 request and response carries.

A /v1 route decorator takes `**documented(method, ...)`: its `responses=` (problem+json, one per status the
operation can answer) and its `operation_class=` (which adds the signature and Idempotency-Key request headers
and the X-Request-Id, X-RateLimit-*, Retry-After and Idempotent-Replayed response headers). What each status
means is decided here once; `api/problems.py` is what produces them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated, Any, ClassVar

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter as LitestarParameter
from litestar.openapi.spec import (Components, Example, OpenAPIHeader, OpenAPIResponse, OpenAPIType, Operation,
                                   Parameter, Reference, RequestBody, Schema, SecurityScheme)

from api.problems import PROBLEM, problem_type

SIGNATURE_SCHEME = """\
The API key as a Bearer token, and an HMAC signature of the request in two more headers:

    Authorization: Bearer <api_key>
    X-Timestamp: <unix time in whole seconds>
    X-Signature: v1=<hex HMAC-SHA256(signing_secret, signed_payload)>

`signed_payload` is `<X-Timestamp>.<METHOD>.<path?query>.<raw body>`: the method in upper case, the path with
its query string exactly as sent (percent-encoding untouched), the body byte for byte (empty when there is none).
The hex digest may be in either case. During a secret rotation `X-Signature` may carry several comma-separated
`v1=` values (several `X-Signature` lines count as one, their values joined by commas); one valid value is enough.
A missing, malformed, unknown or revoked key, a wrong signature, two `Authorization` or `X-Timestamp` lines that
differ, or a timestamp more than 300 s away from the server's clock answers 401 `unauthenticated` (with
`WWW-Authenticate: Bearer realm="hostq"`), without saying which part was wrong. Authentication comes first for
every /v1 path, listed here or not: a signed request to a path this document does not list answers 404
`not_found`, and one with a method its path does not take 405 `method_not_allowed` (with `Allow`)."""


class ProblemFieldError(msgspec.Struct):
    """One input that was refused."""

    field: Annotated[str, msgspec.Meta(description="The body field, query parameter or header at fault",
                                       examples=["domain"])]
    message: Annotated[str, msgspec.Meta(examples=["not a valid domain"])]


class Problem(msgspec.Struct):
    """An error, as RFC 9457 problem details (`application/problem+json`)."""

    type: Annotated[str, msgspec.Meta(description="A URI naming the kind of problem: `https://hostq.dev/problems/"
                                                  "<code without an '_error' suffix, '_' written '-'>`",
                                      examples=["https://hostq.dev/problems/validation"])]
    title: Annotated[str, msgspec.Meta(description="Short, the same for every problem of this code",
                                       examples=["Validation failed"])]
    status: Annotated[int, msgspec.Meta(description="The HTTP status", examples=[400])]
    detail: Annotated[str, msgspec.Meta(description="What went wrong this time, for humans; never a stack trace",
                                        examples=["domain: not a valid domain"])]
    code: Annotated[str, msgspec.Meta(
        description="Machine-readable: validation_error (400), unauthenticated (401), forbidden (403), not_found "
                    "(404), conflict or idempotency_in_flight (409), payload_too_large (413), invalid_state, "
                    "no_capacity or idempotency_key_reused (422), rate_limited (429), internal_error (500), "
                    "unavailable (503)", examples=["validation_error"])]
    request_id: Annotated[str, msgspec.Meta(description="The request's X-Request-Id; quote it when asking for help",
                                            examples=["req_5f0c2a9b8e7d6c5b4a392817"])]
    errors: Annotated[list[ProblemFieldError], msgspec.Meta(
        description="Present on a 400 that can name the inputs at fault: for a JSON body refused by its schema, "
                    "every top-level field at fault (its first problem each, at most 20), in the order of the "
                    "schema's fields, unknown fields last; the rules checked once the schema passes (a domain's "
                    "form, a plan's prices) name what they find. "
                    "Also on a 409 for a unique value already in use (and on a 422 about one field), naming it"
    )] | msgspec.UnsetType = msgspec.UNSET


def _example(status: int, code: str, title: str, detail: str, **extra: Any) -> Example:
    value = {"type": problem_type(code), "title": title, "status": status,
             "detail": detail, "code": code, "request_id": "req_5f0c2a9b8e7d6c5b4a392817", **extra}
    return Example(id=code, summary=code, value=value)


# Every problem an operation may answer: (status, code) -> (when, example).
_PROBLEMS: dict[tuple[int, str], tuple[str, Example]] = {
    (400, "validation_error"): (
        "`validation_error`: a body field, query parameter or header (such as Idempotency-Key) is invalid, a query "
        "parameter is one the operation does not take or is given twice, or a GET or DELETE came with a body; "
        "`errors` names the input at fault",
        _example(400, "validation_error", "Validation failed", "domain: not a valid domain",
                 errors=[{"field": "domain", "message": "not a valid domain"}])),
    (401, "unauthenticated"): (
        "`unauthenticated`: the API key, timestamp or signature is missing or wrong (see the `signedRequest` "
        "security scheme)",
        _example(401, "unauthenticated", "Unauthenticated", "a valid API key and request signature are required")),
    (403, "forbidden"): (
        "`forbidden`: the key lacks the scope this operation needs",
        _example(403, "forbidden", "Forbidden", "this key lacks the 'services:write' scope")),
    (404, "not_found"): (
        "`not_found`: no such id for this tenant. Another tenant's id, and a value that is not a UUID, answer "
        "exactly the same",
        _example(404, "not_found", "Not found", "no such service")),
    (409, "conflict"): (
        "`conflict`: the request conflicts with the current state (a unique value already in use, or another "
        "job in flight for the resource); a unique value in use is named in `errors`",
        _example(409, "conflict", "Conflict", "a plan with code 'basic' already exists",
                 errors=[{"field": "code", "message": "another plan of yours has it"}])),
    (409, "idempotency_in_flight"): (
        "`idempotency_in_flight`: a request with this Idempotency-Key is still being processed; retry after "
        "`Retry-After` seconds",
        _example(409, "idempotency_in_flight", "Idempotency key in flight",
                 "a request with this Idempotency-Key is still being processed; retry shortly")),
    (413, "payload_too_large"): (
        "`payload_too_large`: the body is over 1 MiB (checked before authentication)",
        _example(413, "payload_too_large", "Payload too large", "the request body is larger than 1 MiB")),
    (422, "invalid_state"): (
        "`invalid_state`: the resource's state does not allow this action",
        _example(422, "invalid_state", "Invalid state", "cannot suspend a terminated service")),
    (422, "no_capacity"): (
        "`no_capacity`: every server in the region is full or disabled",
        _example(422, "no_capacity", "No capacity", "every server in region 'us' is full or disabled")),
    (422, "idempotency_key_reused"): (
        "`idempotency_key_reused`: this Idempotency-Key was used with a different method, path or body",
        _example(422, "idempotency_key_reused", "Idempotency key reused",
                 "this Idempotency-Key was used with a different method, path or body")),
    (429, "rate_limited"): (
        "`rate_limited`: over the tenant's requests a minute; retry after `Retry-After` seconds",
        _example(429, "rate_limited", "Too many requests", "over 600 requests a minute; retry after 1 s")),
    (500, "internal_error"): (
        "`internal_error`: a bug on our side; the body never carries a stack trace",
        _example(500, "internal_error", "Internal server error", "an unexpected error occurred")),
    (503, "unavailable"): (
        "`unavailable`: a dependency (database, Redis) is down; retry after `Retry-After` seconds",
        _example(503, "unavailable", "Service unavailable", "a dependency is unavailable")),
}


def _problem_responses(codes: list[tuple[int, str]]) -> dict[int, ResponseSpec]:
    by_status: dict[int, list[str]] = {}
    for status, code in codes:
        by_status.setdefault(status, []).append(code)
    return {status: ResponseSpec(data_container=Problem, media_type=PROBLEM, generate_examples=False,
                                 description="; ".join(_PROBLEMS[(status, c)][0] for c in names) + ".",
                                 examples=[_PROBLEMS[(status, c)][1] for c in names])
            for status, names in sorted(by_status.items())}


def documented(method: str, *, scoped: bool = True, by_id: bool = False, conflict: bool = False,
               states: bool = False, capacity: bool = False) -> dict[str, Any]:
    """`responses=` and `operation_class=` for a /v1 route decorator.

    Every operation may answer 400 (a query parameter it does not take, api/strict_request.py; a body on a GET or
    DELETE, api/auth.py). `scoped`: the route needs a scope of the key (403); `by_id`: an id in the path (404);
    `conflict`: 409 conflict; `states`: 422 invalid_state; `capacity`: 422 no_capacity.
    """
    post = method.upper() == "POST"
    has_body = method.upper() in ("POST", "PATCH", "PUT")
    wanted = [(400, "validation_error"), (401, "unauthenticated")]
    wanted += [(403, "forbidden")] if scoped else []
    wanted += [(404, "not_found")] if by_id else []
    wanted += [(409, "conflict")] if conflict else []
    wanted += [(409, "idempotency_in_flight")] if post else []
    wanted += [(413, "payload_too_large")] if has_body else []
    wanted += [(422, "invalid_state")] if states else []
    wanted += [(422, "no_capacity")] if capacity else []
    wanted += [(422, "idempotency_key_reused")] if post else []
    wanted += [(429, "rate_limited"), (500, "internal_error"), (503, "unavailable")]
    return {"responses": _problem_responses(wanted),
            "operation_class": V1PostOperation if post else V1Operation}


Cursor = Annotated[str | None, LitestarParameter(
    description="The `next_cursor` of the previous page; absent for the first page. Opaque: a value that is not a "
                "cursor is 400")]


def resource_id(resource: str) -> Any:
    """The annotation of a path parameter holding the id of a `resource`."""
    return Annotated[str, LitestarParameter(
        description=f"The {resource}'s id (a UUID). An id that does not exist, another tenant's id, and a value "
                    "that is not a UUID all answer 404 not_found.", schema_extra={"format": "uuid"})]


def _string(**kwargs: Any) -> Schema:
    return Schema(type=OpenAPIType.STRING, **kwargs)


def _integer(**kwargs: Any) -> Schema:
    return Schema(type=OpenAPIType.INTEGER, **kwargs)


_RATE_NOTE = ("On every authenticated /v1 response (absent only on 401 and 413, answered before the tenant is "
              "known, and while the rate limiter's Redis is unreachable, when requests are let through).")
HEADERS: dict[str, OpenAPIHeader | Reference] = {
    "X-Request-Id": OpenAPIHeader(
        schema=_string(max_length=128), required=True, example="req_5f0c2a9b8e7d6c5b4a392817",
        description="The request's id: the client's own X-Request-Id when it sent a usable one, else generated. "
                    "Also in the problem body, the logs, and every job the request causes."),
    "X-RateLimit-Limit": OpenAPIHeader(schema=_integer(minimum=1), example=600,
                                       description="The tenant's limit, requests a minute. " + _RATE_NOTE),
    "X-RateLimit-Remaining": OpenAPIHeader(
        schema=_integer(minimum=0), example=599,
        description="Requests that would pass if sent right now (0 on a 429). " + _RATE_NOTE),
    "X-RateLimit-Reset": OpenAPIHeader(
        schema=_integer(minimum=0), example=1795000000,
        description="Unix time in seconds (rounded up) at which the bucket is full again, i.e. when Remaining is "
                    "back to Limit if nothing more is sent. When the next single request may pass is Retry-After, "
                    "on a 429. " + _RATE_NOTE),
    "Idempotent-Replayed": OpenAPIHeader(
        schema=_string(enum=["true"]),
        description="`true` when this is the stored answer to an earlier request with the same Idempotency-Key "
                    "(same method, path and body), replayed without doing anything again."),
}

PARAMETERS: dict[str, Parameter | Reference] = {
    "X-Timestamp": Parameter(
        name="X-Timestamp", param_in="header", required=True, schema=_string(pattern=r"^[0-9]{1,12}$"),
        example="1795000000",
        description="Unix time in whole seconds; more than 300 s away from the server's clock is 401. Part of the "
                    "signature (see the `signedRequest` security scheme)."),
    "X-Signature": Parameter(
        name="X-Signature", param_in="header", required=True, schema=_string(),
        example="v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd",
        description="`v1=<hex HMAC-SHA256(signing_secret, \"<X-Timestamp>.<METHOD>.<path?query>.<raw body>\")>`; "
                    "several comma-separated `v1=` values during a secret rotation. See the `signedRequest` "
                    "security scheme."),
    "X-Request-Id": Parameter(
        name="X-Request-Id", param_in="header", required=False, schema=_string(),
        example="order-7f3a-retry-1",
        description="Your own id for this request, echoed in the X-Request-Id response header, problem bodies, our "
                    "logs and the jobs it causes. Used when it is 1..128 printable ASCII characters; otherwise one "
                    "is generated."),
    "Idempotency-Key": Parameter(
        name="Idempotency-Key", param_in="header", required=False,
        schema=_string(min_length=1, max_length=255, pattern=r"^[ -~]+$"), example="order-2026-11-22-0001",
        description="Makes the POST safe to retry: 1..255 printable ASCII characters, scoped to the tenant and "
                    "kept at least 24 h. The same key with the same method, path and body replays the first answer "
                    "(status and body, `Idempotent-Replayed: true`) without a second effect; with a different "
                    "method, path or body it is 422 idempotency_key_reused; while the first request runs, 409 "
                    "idempotency_in_flight. Answers 5xx, 408 and 429 are not stored: retry with the same key. "
                    "An invalid key is 400."),
}

COMPONENTS = Components(
    headers=HEADERS, parameters=PARAMETERS,
    security_schemes={"signedRequest": SecurityScheme(type="http", scheme="bearer", bearer_format="API key",
                                                      description=SIGNATURE_SCHEME)})

_NO_RATE_HEADERS = frozenset({"401", "413"})  # answered before the tenant (and so its limit) is known
# Besides 2xx, the 4xx answers that are stored: not 408 or 429, nor those given before the idempotency middleware
# runs (401, 403 and 413: api/edge.py).
_REPLAYABLE = frozenset({"400", "404", "409", "422"})


#: Litestar's description of a 201, which promises a URL that hostq does not send.
_LITESTAR_201 = "Document created, URL follows"


def _nullable(schema: Schema | Reference | None) -> bool:
    return isinstance(schema, Schema) and any(isinstance(s, Schema) and s.type == OpenAPIType.NULL
                                              for s in schema.one_of or [])


def _ref(kind: str, name: str) -> Reference:
    return Reference(ref=f"#/components/{kind}/{name}")


@dataclass
class V1Operation(Operation):
    """An operation under /v1: signed request headers, and the headers every response carries."""

    idempotent: ClassVar[bool] = False

    def __post_init__(self) -> None:
        names = ["X-Timestamp", "X-Signature", "X-Request-Id"] + (["Idempotency-Key"] if self.idempotent else [])
        self.parameters = [*(self.parameters or []), *(_ref("parameters", name) for name in names)]
        responses = self.responses or {}
        default_400 = responses.get("400")
        if isinstance(default_400, OpenAPIResponse) and PROBLEM not in (default_400.content or {}):
            del responses["400"]  # Litestar's own ValidationException shape: ours is problem+json, when it applies
        for status, response in responses.items():
            if isinstance(response, OpenAPIResponse):
                if status == "201" and response.description == _LITESTAR_201:
                    response.description = "Created: the new resource (no `Location`: its id is in the body)"
                response.headers = {**(response.headers or {}), **self._headers(status)}
                for media in (response.content or {}).values():
                    # Litestar keys examples by `Example.id` and also prints it, which the spec does not allow.
                    media.examples = {key: replace(example, id=None) if isinstance(example, Example) else example
                                      for key, example in (media.examples or {}).items()} or None
        body = self.request_body
        if isinstance(body, RequestBody):
            # Every body schema is a msgspec Struct with forbid_unknown_fields, which Litestar does not print.
            body.description = body.description or "JSON. An unknown field is refused (400 validation_error)."
            if any(_nullable(media.schema) for media in (body.content or {}).values()):
                body.required = False  # `data: X | None = None`: the body may be left out

    def _headers(self, status: str) -> dict[str, OpenAPIHeader | Reference]:
        names = ["X-Request-Id"]
        if status not in _NO_RATE_HEADERS:
            names += ["X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"]
        out: dict[str, OpenAPIHeader | Reference] = {name: _ref("headers", name) for name in names}
        if status == "401":
            out["WWW-Authenticate"] = OpenAPIHeader(schema=_string(), required=True,
                                                    example='Bearer realm="hostq", charset="UTF-8"',
                                                    description="The challenge: a signed request with a Bearer API key "
                                                                "(see the `signedRequest` security scheme).")
        elif status in ("429", "503"):
            out["Retry-After"] = OpenAPIHeader(schema=_integer(minimum=1), required=True,
                                               description="Whole seconds to wait before retrying.")
        elif status == "409" and self.idempotent:
            out["Retry-After"] = OpenAPIHeader(schema=_integer(minimum=1),
                                               description="On idempotency_in_flight: seconds to wait before "
                                                           "retrying with the same key.")
        if self.idempotent and (status.startswith("2") or status in _REPLAYABLE):
            out["Idempotent-Replayed"] = _ref("headers", "Idempotent-Replayed")
        return out


@dataclass
class V1PostOperation(V1Operation):
    """A POST under /v1: it also takes Idempotency-Key, and its stored answers may be replayed."""

    idempotent: ClassVar[bool] = True


def note_scopes(app: Any) -> None:
    """Say in each /v1 operation's description which scope its key needs (`requires` in api/auth.py), so that the
    document tells what a 403 forbidden will be about."""
    from api.auth import SCOPE_OPT

    paths = app.openapi_schema.paths or {}
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            needed = handler.opt.get(SCOPE_OPT)
            item = paths.get(route.path_format)
            for method in handler.http_methods if needed and item is not None else ():
                operation = getattr(item, method.lower(), None)
                if operation is not None and "scope." not in (operation.description or ""):
                    said = f"The key needs the `{needed}` scope."
                    operation.description = f"{operation.description}\n\n{said}" if operation.description else said
