"""The one map from errors to problem+json (RFC 9457), with `code` and `request_id`."""

from __future__ import annotations

import json
import logging
import re

from litestar import Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from sqlalchemy.exc import DataError, IntegrityError

from api.request_ids import request_id
from domain import errors
from domain.outages import describe, is_outage

log = logging.getLogger("hostq.api")

PROBLEM = "application/problem+json"
_DOMAIN = {
    errors.NotFound: (404, "Not found"),
    errors.ValidationFailed: (400, "Validation failed"),
    errors.Conflict: (409, "Conflict"),
    errors.InvalidState: (422, "Invalid state"),
    errors.NoCapacity: (422, "No capacity"),
    errors.Unavailable: (503, "Service unavailable"),
}
_HTTP = {
    400: ("validation_error", "Validation failed"), 401: ("unauthenticated", "Unauthenticated"),
    403: ("forbidden", "Forbidden"), 404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"), 409: ("conflict", "Conflict"),
    413: ("payload_too_large", "Payload too large"), 415: ("unsupported_media_type", "Unsupported media type"),
    429: ("rate_limited", "Too many requests"), 503: ("unavailable", "Service unavailable"),
}



def problem_type(code: str) -> str:
    """The problem's `type` URI: the code without an `_error` suffix, `_` written `-` (validation_error ->
    https://hostq.dev/problems/validation, as api-v1.md's example has it)."""
    return f"https://hostq.dev/problems/{code.removesuffix('_error').replace('_', '-')}"


#: The most inputs a problem names, and the most characters of any text in it: a body of a million unknown fields
#: (or of one field with a name of a million characters) must not make an answer larger than the request, nor a
#: stored idempotent answer of megabytes.
MAX_FIELD_ERRORS = 20
MAX_TEXT = 300


def _short(text: str) -> str:
    return text if len(text) <= MAX_TEXT else f"{text[:MAX_TEXT - 1]}…"


def problem(request: Request, status: int, code: str, title: str, detail: str = "", *,
            field_errors: list | None = None, headers: dict[str, str] | None = None) -> Response:
    """A problem+json response; at most MAX_FIELD_ERRORS inputs named (the detail then says there were more), each
    text at most MAX_TEXT characters."""
    detail = detail or title
    if field_errors and len(field_errors) > MAX_FIELD_ERRORS:
        detail = f"{detail} (only the first {MAX_FIELD_ERRORS} problems are named)"
    body = {"type": problem_type(code), "title": title, "status": status,
            "detail": _short(detail), "code": code, "request_id": request_id(request.scope)}
    if field_errors:
        body["errors"] = [{name: _short(str(value)) for name, value in error.items()}
                          for error in field_errors[:MAX_FIELD_ERRORS]]
    return Response(body, status_code=status, media_type=PROBLEM, headers=headers)


#: msgspec names a missing or unknown field in its message, and Litestar gives such errors the key "data"
#: (the whole body): the field is the one the message names, below the key when there is one.
_NAMED_FIELD = re.compile(r"(?:missing required|unknown) field `([^`]+)`")


def _field_name(key: str, message: str) -> str:
    named = _NAMED_FIELD.search(message)
    parent = "" if key in ("", "data") else key.removesuffix("[...]")
    if named:
        return f"{parent}.{named.group(1)}" if parent else named.group(1)
    return parent or "body"  # e.g. an array where an object was expected


def _validation_errors(exc: ValidationException) -> list[dict[str, str]]:
    out = []
    for item in exc.extra[:MAX_FIELD_ERRORS + 1] if isinstance(exc.extra, list) else []:  # + 1: "there were more"
        if isinstance(item, dict):
            message = str(item.get("message", "invalid"))
            if item.get("key") == "data" and message == "'data'":  # Litestar's KeyError: no body was sent
                message = "a JSON object is required"
            if item.get("source", "body") == "body":
                field = _field_name(str(item.get("key") or ""), message)
            else:  # a query, path or header parameter: Litestar names it
                field = str(item.get("key") or item.get("source"))
            out.append({"field": field, "message": message})
    return out


#: The detail of every 413 (api/auth.py's check of Content-Length, and Litestar's of a body sent without one).
TOO_LARGE = "the request body is larger than 1 MiB"

#: Where api/auth.py leaves a /v1 request's raw body (it reads it to check the signature) for this module.
BODY_KEY = "hostq.body"
_NUL = "may not contain NUL characters"


def _nul_fields(request: Request) -> list[dict[str, str]]:
    """The query parameters and JSON body fields whose text holds a NUL character, which Postgres refuses in text:
    `items[0].description`, as the other validation errors name fields."""
    found = [{"field": name, "message": _NUL} for name, value in request.query_params.multi_items()
             if "\x00" in value]
    body = request.scope.get(BODY_KEY)
    if not body or b"\\u0000" not in body:  # JSON can carry a NUL only as that escape
        return found
    try:
        data = json.loads(body)
    except ValueError:
        return found

    def walk(value: object, path: str) -> None:
        if isinstance(value, str) and "\x00" in value:
            found.append({"field": path or "body", "message": _NUL})
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{path}[{index}]")

    walk(data, "")
    return found


def _while_decoding(exc: BaseException) -> bool:
    """Whether `exc` was raised by Litestar decoding a request's JSON body."""
    return any(tb.tb_frame.f_code.co_name == "decode_json" and "litestar" in tb.tb_frame.f_code.co_filename
               for tb in _frames(exc.__traceback__))


def _frames(tb):
    while tb is not None:
        yield tb
        tb = tb.tb_next


def handle(request: Request, exc: Exception) -> Response:
    """Map any exception to its problem; a 500 never carries a trace."""
    if isinstance(exc, errors.Misconfigured):
        log.error("%s (request_id=%s)", exc.detail, request_id(request.scope))
        return problem(request, 500, exc.code, "Internal server error",
                       "hostq is not set up to serve this request; its operators have the details")
    if isinstance(exc, errors.DomainError):
        status, title = next(v for k, v in _DOMAIN.items() if isinstance(exc, k))
        headers = {"Retry-After": "5"} if status == 503 else None
        return problem(request, status, exc.code, title, exc.detail, field_errors=exc.errors, headers=headers)
    if isinstance(exc, HTTPException):
        status = exc.status_code
        code, title = _HTTP.get(status, ("error", "Error"))
        detail = exc.detail if status != 500 else ""
        fields = _validation_errors(exc) if isinstance(exc, ValidationException) else None
        if status == 413:  # also Litestar's own "Request Entity Too Large", for a body sent without a length
            detail = TOO_LARGE
        if isinstance(exc.__cause__, SerializationException):  # msgspec could not decode the body as JSON
            why = str(exc.__cause__).removeprefix("JSON is malformed: ")
            detail = f"the body is not valid JSON: {why[:1].lower()}{why[1:]}"
            fields = [{"field": "body", "message": "not valid JSON"}]
        return problem(request, status, code, title, detail, field_errors=fields, headers=exc.headers)
    if isinstance(exc, RecursionError) and _while_decoding(exc):
        # a few KB of brackets exhaust the decoder's recursion: bad input, however deep the limit is set
        return problem(request, 400, "validation_error", "Validation failed",
                       "the body is not acceptable JSON: it is nested too deeply",
                       field_errors=[{"field": "body", "message": "nested too deeply"}])
    sqlstate = str(getattr(exc, "sqlstate", None) or getattr(getattr(exc, "orig", None), "sqlstate", None) or "")
    if isinstance(exc, DataError) or sqlstate.startswith("22"):
        # Postgres refused a value (e.g. a NUL character in text): bad input, not a server fault.
        fields = _nul_fields(request)
        detail = ("text may not contain NUL characters" if fields
                  else "a value is not acceptable (for example, text may not contain NUL characters)")
        return problem(request, 400, "validation_error", "Validation failed", detail, field_errors=fields)
    if sqlstate == "23514" and "has no room for another service" in str(exc):
        # The live-service counter's backstop (migration 0011): a path reached it without checking room first.
        log.warning("server capacity backstop refused a change (request_id=%s): %s", request_id(request.scope),
                    str(getattr(exc, "orig", exc)).splitlines()[0])
        return problem(request, 422, "no_capacity", "No capacity", "the service's server has no room: raise its "
                       "capacity or terminate a service there")
    if isinstance(exc, IntegrityError) or sqlstate.startswith("23"):
        return problem(request, 409, "conflict", "Conflict", "the request conflicts with existing data")
    if is_outage(exc):
        log.warning("dependency down: %s (request_id=%s)", describe(exc), request_id(request.scope))
        return problem(request, 503, "unavailable", "Service unavailable", "a dependency is unavailable",
                       headers={"Retry-After": "5"})
    log.exception("unhandled error (request_id=%s)", request_id(request.scope))
    return problem(request, 500, "internal_error", "Internal server error", "an unexpected error occurred")
