"""Requests are checked strictly before Litestar converts them: the body's types, and the query's names.

Litestar converts a handler's `data` leniently (msgspec's `strict=False`, which its query and path parameters
need), so `{"monthly": "100"}`, `"1e3"` or `100.0` would pass as the integer 100. The API's contract is JSON with
the types it documents: a string where an integer is due is a client's mistake, answered 400 `validation_error`
naming the field, as a wrong type elsewhere is, and nothing is changed.

Litestar also ignores a query parameter a route does not take, and keeps the last of one given twice. As at
Stripe, both are 400 here: `GET /v1/services?customer=...` (a typo of `customer_id`) must not answer with every
customer's services, nor `?status=active&status=suspended` with only one of the two.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import SerializationException, ValidationException

_NOT_YET = object()
#: Each route handler's body type (None: it takes no body), looked up once.
_TYPES: dict[int, Any] = {}
#: Each route handler's parameters that may come from the query (its path's are told apart per request).
_QUERY: dict[int, frozenset[str]] = {}
#: Names a handler takes that Litestar fills from elsewhere than the query.
_NOT_QUERY = frozenset({"request", "data", "state", "scope", "headers", "cookies", "query", "body", "socket"})


def _body_type(handler: Any) -> Any:
    found = _TYPES.get(id(handler), _NOT_YET)
    if found is _NOT_YET:
        field = handler.parsed_fn_signature.parameters.get("data")
        found = _TYPES[id(handler)] = field.annotation if field is not None else None
    return found


def _query_names(handler: Any) -> frozenset[str]:
    names = _QUERY.get(id(handler))
    if names is None:
        filled = _NOT_QUERY | set(handler.resolve_dependencies())
        names = _QUERY[id(handler)] = frozenset(set(handler.parsed_fn_signature.parameters) - filled)
    return names


def _check_query(request: Request) -> None:
    taken = _query_names(request.route_handler)
    params = request.query_params
    for name in params:
        if name not in taken or name in request.path_params:
            why = "not a parameter of this request"
        elif len(params.getall(name)) > 1:
            why = "given more than once"
        else:
            continue
        raise ValidationException(detail=f"{name}: {why}", extra=[{"message": why, "key": name, "source": "query"}])


async def check(request: Request) -> None:
    """Refuse a query parameter the route does not take or one given twice, and a JSON body whose values are not of
    their field's type (a `before_request` hook: None goes on)."""
    if request.scope["query_string"] and request.route_handler.include_in_schema:  # not api/fallbacks.py's 404s
        _check_query(request)
    body_type = _body_type(request.route_handler)
    if body_type is None:
        return None
    if not await request.body():
        return None  # no body: Litestar says what is missing
    try:
        # Litestar's decoding, which keeps the result for the handler; a body nested too deeply raises from it,
        # as api/problems.py expects
        value = await request.json()
    except SerializationException:
        return None  # not JSON at all: Litestar answers it when it converts the body
    try:
        msgspec.convert(value, type=body_type, strict=True)
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).partition(" - at `")
        key = where.rstrip("`").removeprefix("$").removeprefix(".")
        raise ValidationException(detail=f"Validation failed for {request.method} {request.url.path}",
                                  extra=[{"message": message, "key": key or "data", "source": "body"}]) from exc
    return None
