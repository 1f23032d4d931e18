"""One JSON log line per request: request_id, tenant, method, route, status, duration."""

from __future__ import annotations

import sys
import time
from typing import TextIO

import msgspec
from litestar.types import ASGIApp, Receive, Scope, Send

from api.auth import AUTH_KEY
from api.request_ids import request_id

#: Scope key where the app's before_send hook (api/app.py) leaves the response status.
STATUS_KEY = "hostq.status"


class AccessLog:
    """Wraps the whole app (outside routing, so a 404 is logged too); one line per request to `stream`.

    Written straight to the stream (stderr by default), not through `logging`: a LogRecord per request
    costs more than the rest of this line's work. The status comes from api/app.py's before_send hook,
    which already sees every response start, so no second `send` wrapper is needed; 500 if none started.
    """

    def __init__(self, app: ASGIApp, stream: TextIO | None = None) -> None:
        self.app = app
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            caller = scope.get(AUTH_KEY)  # type: ignore[call-overload]
            line = _encode(_Line(
                at=_now(), request_id=request_id(scope), tenant=str(caller.tenant_id) if caller else None,
                method=scope["method"], route=scope.get("path_template") or scope["path"],
                status=scope.get(STATUS_KEY, 500),  # type: ignore[call-overload]
                duration_ms=round((time.perf_counter() - started) * 1000, 2)))
            stream = self.stream or sys.stderr
            stream.write(line.decode() + "\n")
            stream.flush()


class _Line(msgspec.Struct, kw_only=True):
    """One request's log line (msgspec: encoding it costs a fraction of json.dumps on a dict)."""

    at: str
    event: str = "request"
    request_id: str
    tenant: str | None
    method: str
    route: str
    status: int
    duration_ms: float


_encode = msgspec.json.Encoder().encode
_second: list = [0, ""]


def _now() -> str:
    """UTC now to the second, RFC 3339 (formatted once per second)."""
    second = int(time.time())
    if _second[0] != second:
        _second[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))]
    return _second[1]
