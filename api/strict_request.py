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

from itertools import islice
from typing import Any, NamedTuple, get_args

import msgspec
from litestar import Litestar, Request
from litestar.exceptions import SerializationException, ValidationException
from litestar.routes import HTTPRoute

from api.problems import MAX_FIELD_ERRORS

#: Where the app keeps each route handler's Rules (see `prepare`).
STATE_KEY = "strict_request_rules"


class Rules(NamedTuple):
    """What one route handler takes: the query parameters' names as Litestar reads them, and the body's type."""

    query: frozenset[str]
    body: Any  # None: the handler takes no body
    checked: bool  # False for api/fallbacks.py's 404 and 405 handlers: their answer stands whatever the query


def prepare(app: Litestar) -> None:
    """Read every route handler's rules once, from the model Litestar itself fills the handler's arguments with.

    Kept on the app (by handler id, alive as long as the app): a process, or a test, that builds several apps
    never applies one app's rules to another's handlers.
    """
    rules: dict[int, Rules] = {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler, kwargs_model in route.route_handler_map.values():
            data = handler.parsed_fn_signature.parameters.get("data")
            rules[id(handler)] = Rules(frozenset(p.field_alias for p in kwargs_model.expected_query_params),
                                       data.annotation if data is not None else None, handler.include_in_schema)
    setattr(app.state, STATE_KEY, rules)


def _check_query(request: Request, taken: frozenset[str]) -> None:
    params = request.query_params
    for name in params:
        if name not in taken:
            why = "not a parameter of this request"
        elif len(params.getall(name)) > 1:
            why = "given more than once"
        else:
            continue
        raise ValidationException(detail=f"query parameter {name!r}: {why}",
                                  extra=[{"message": why, "key": name or "query", "source": "query"}])


async def check(request: Request) -> None:
    """Refuse a query parameter the route does not take or one given twice, and a JSON body whose values are not of
    their field's type (a `before_request` hook: None goes on)."""
    rules = getattr(request.app.state, STATE_KEY).get(id(request.route_handler))
    if rules is None:  # a handler registered after the app was built (none is): unchecked rather than a 500
        return None
    if request.scope["query_string"] and rules.checked:
        _check_query(request, rules.query)
    if rules.body is None or not await request.body():
        return None  # no body taken, or none sent: Litestar says what is missing
    try:
        # Litestar's decoding, which keeps the result for the handler; a body nested too deeply raises from it,
        # as api/problems.py expects
        value = await request.json()
    except SerializationException:
        return None  # not JSON at all: Litestar answers it when it converts the body
    try:
        msgspec.convert(value, type=rules.body, strict=True)
    except msgspec.ValidationError as exc:
        errors = _each_field(value, rules.body) or [_error(exc)]
        raise ValidationException(detail=f"Validation failed for {request.method} {request.url.path}",
                                  extra=errors) from exc
    return None


def _error(exc: msgspec.ValidationError, field: str = "") -> dict[str, str]:
    """msgspec's message and where it points (`$.items[0].x`), below `field` when the value checked was one field's."""
    message, _, where = str(exc).partition(" - at `")
    key = f"{field}{where.rstrip('`').removeprefix('$')}".removeprefix(".")
    return {"message": message, "key": key or "data", "source": "body"}


def _each_field(value: Any, body: Any) -> list[dict[str, str]]:
    """The first error of every field of a JSON object refused as the body's Struct (msgspec stops at the first):
    a client with several mistakes learns them all at once. Empty when the body is not an object meant for a
    Struct, or when no field alone is wrong (a rule across fields): the caller then names msgspec's one error."""
    struct = next((t for t in (body, *get_args(body)) if isinstance(t, type) and issubclass(t, msgspec.Struct)), None)
    if struct is None or not isinstance(value, dict):
        return []
    fields = msgspec.structs.fields(struct)
    errors: list[dict[str, str]] = []
    for field in fields:
        if field.encode_name not in value:
            if field.required:
                errors.append({"message": f"Object missing required field `{field.encode_name}`", "key": "",
                               "source": "body"})
            continue
        try:
            msgspec.convert(value[field.encode_name], type=field.type, strict=True)
        except msgspec.ValidationError as exc:
            errors.append(_error(exc, f".{field.encode_name}"))
    if struct.__struct_config__.forbid_unknown_fields:
        known = {field.encode_name for field in fields}
        unknown = (name for name in value if name not in known)
        errors += [{"message": f"Object contains unknown field `{name}`", "key": "", "source": "body"}
                   for name in islice(unknown, MAX_FIELD_ERRORS + 1)]  # a problem names no more (api/problems.py)
    return errors
