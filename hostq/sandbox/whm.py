"""The fake WHM: WHM API 1 over HTTP, with faults and latency injected, and the control API under /__sandbox/.

The accounts and the functions on them are in `whm_accounts`.

A raw ASGI app rather than Litestar: benchmarks run through it, and the `reset`
fault must drop the connection, which a framework would turn into a 500.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl

import msgspec
import uvicorn

from hostq.sandbox.asgi import STOP_WITHIN_S, TEXT, SandboxApp, drop_connection, hold, pause, respond
from hostq.sandbox.whm_accounts import FUNCTIONS, AccountBook, Rejected, envelope
from hostq.stopping import exit_zero_on_stop_signals

ASGIApp = Callable[..., Any]
ACCESS_DENIED = msgspec.json.encode({"cpanelresult": {
    "apiversion": "2", "error": "Access denied", "data": {"reason": "Access denied", "result": "0"}, "type": "text"}})
FAULT_MODES = frozenset({"http_500", "reset", "timeout", "result_0", "timeout_then_create", "result_0_leave_user"})


@dataclass
class Fault:
    function: str
    mode: str
    times: int = 1
    hold_s: float = 600.0
    reason: str = "An internal error occurred (sandbox fault)."


class FakeWhm(SandboxApp):
    """One fake WHM server: its accounts (an AccountBook), the faults and latency queued by the control API,
    and how often each function was called."""

    def __init__(self, token: str, packages: tuple[str, ...], state_path: Path | None = None) -> None:
        self.token = token
        self.book = AccountBook(packages, state_path)
        self.faults: dict[str, deque[Fault]] = {}
        self.latency: dict[str, float] = {}
        self.calls: Counter[str] = Counter()

    async def handle(self, scope: dict, receive: Callable, send: Callable, body: bytes) -> None:
        path: str = scope["path"]
        if path.startswith("/json-api/"):
            return await self.api(scope, receive, send, path[len("/json-api/"):].strip("/"), body)
        if path.startswith("/__sandbox/"):
            status, payload = self.control(scope["method"], path[len("/__sandbox/"):].strip("/"), body)
            return await respond(send, status, msgspec.json.encode(payload))
        return await respond(send, 404, b"Not Found", TEXT)

    async def api(self, scope: dict, receive: Callable, send: Callable, function: str, body: bytes) -> None:
        """Answer one /json-api/<function> call, applying latency and any queued fault."""
        self.calls[function] += 1
        caller = self.authenticate(scope)
        if caller is None:  # WHM's own answer to a token it does not accept: 403 with a cPanel API 2 body
            return await respond(send, 403, ACCESS_DENIED)
        params = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        if body:
            params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        if params.get("api.version") != "1":
            # WHM without api.version=1 speaks API 0, whose shape clients must not mistake for API 1.
            return await respond(send, 200, b'{"status":0,"statusmsg":"The sandbox only speaks api.version=1."}')
        fault = self.take_fault(function)
        delay = self.latency.get(function)
        if function == "createacct" and delay and fault is None:
            return await self.slow_create(send, params, caller, delay)
        if delay and not await pause(send, delay):
            return None
        if fault is None:
            return await respond(send, 200, self.book.run(function, params, caller))
        if fault.mode == "http_500":
            return await respond(send, 500, b"Internal Server Error", TEXT)
        if fault.mode == "reset":
            return await drop_connection(send)
        if fault.mode == "result_0":
            return await respond(send, 200, envelope(function, 0, fault.reason, {}))
        if fault.mode == "result_0_leave_user":  # as a real failed create can: the Unix user stays behind
            if function == "createacct" and self.book.could_create(user := params.get("username", "")):
                self.book.leave_user(user)
            return await respond(send, 200, envelope(function, 0, fault.reason, {}))
        answer = self.book.run(function, params, caller) if fault.mode == "timeout_then_create" else None
        if not await hold(receive, send, fault.hold_s):
            return None
        if answer is None:
            return await respond(send, 504, b"Gateway Timeout", TEXT)
        return await respond(send, 200, answer)

    async def slow_create(self, send: Callable, params: dict[str, str], caller: str, delay: float) -> None:
        """createacct with latency, as WHM makes an account: checked at once (a refusal answers at once: the
        latency is the making of an account), its system user made at once (another createacct or
        verify_new_username then finds the name in use, accountsummary no account), the account at the end,
        whether or not the caller still waits for the answer."""
        try:
            user = self.book.begin_create(params)
        except Rejected as exc:
            return await respond(send, 200, envelope("createacct", 0, str(exc), {}))
        try:
            if not await pause(send, delay):  # the fake stops: the account is not made, as with a WHM stopped
                return None
        finally:
            self.book.end_create(user)
        return await respond(send, 200, self.book.run("createacct", params, caller))

    def authenticate(self, scope: dict) -> str | None:
        """The calling user when the `whm user:token` header carries our token."""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.decode("latin-1").partition(" ")
                user, _, token = credentials.strip().partition(":")
                if scheme.lower() == "whm" and user and token == self.token:
                    return user
        return None

    def take_fault(self, function: str) -> Fault | None:
        """Consume one use of the oldest fault queued for `function`."""
        queue = self.faults.get(function)
        if not queue:
            return None
        fault = queue[0]
        fault.times -= 1
        if fault.times <= 0:
            queue.popleft()
        return fault

    def control(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        """Answer one /__sandbox/ call: accounts, leftover system users, faults, latency, call counts."""
        match method, path:
            case "GET", "accounts":
                return 200, {"accounts": [a.control() for a in self.book.accounts.values()]}
            case "DELETE", "accounts":
                self.book.clear()
                return 200, {"accounts": []}
            case "GET" | "DELETE", "calls":
                counts = dict(self.calls)
                if method == "DELETE":
                    self.calls.clear()
                return 200, {"calls": counts}
            case "GET", "system-users":
                return 200, {"system_users": sorted(self.book.leftover_users)}
            case "DELETE", str(user_path) if user_path.startswith("system-users/"):
                user = user_path[len("system-users/"):]
                if not self.book.remove_system_user(user):
                    return 404, {"error": f"no system user {user!r} without an account"}
                return 200, {"system_users": sorted(self.book.leftover_users)}
            case "DELETE", "faults":
                self.faults.clear()
            case "POST", "faults" | "latency":
                try:
                    self.configure(path, msgspec.json.decode(body or b"{}"))
                except (msgspec.DecodeError, KeyError, TypeError, ValueError) as exc:
                    return 400, {"error": str(exc)}
            case "GET", "faults" | "latency":
                pass
            case _:
                return 404, {"error": f"no such sandbox endpoint: {method} /__sandbox/{path}"}
        faults = [asdict(f) for queue in self.faults.values() for f in queue]
        return 200, {"faults": faults, "latency": dict(self.latency)}

    def configure(self, what: str, spec: dict[str, Any]) -> None:
        """Queue a fault or set a function's latency from a control request body."""
        if isinstance(spec, dict) and (unknown := sorted(set(spec) - _CONTROL_KEYS[what])):
            raise ValueError(f"unknown field(s) {', '.join(map(repr, unknown))}: /__sandbox/{what} takes "
                             f"{', '.join(sorted(_CONTROL_KEYS[what]))}")
        function = str(spec["function"]) if isinstance(spec, dict) and spec.get("function") else ""
        if function not in FUNCTIONS:
            raise ValueError(f'"function" must be one of {sorted(FUNCTIONS)}')
        if what == "latency":  # "seconds": 0 takes the function's latency away
            if "seconds" not in spec:
                raise ValueError('"seconds" is required (0 to remove the latency)')
            seconds = _at_least(spec["seconds"], 0.0, "seconds")
            if seconds:
                self.latency[function] = seconds
            else:
                self.latency.pop(function, None)
            return
        if spec.get("mode") not in FAULT_MODES:
            raise ValueError(f'"mode" must be one of {sorted(FAULT_MODES)}')
        fault = Fault(function, spec["mode"], int(_at_least(spec.get("times", 1), 1, "times")),
                      _at_least(spec.get("hold_s", 600.0), 0.0, "hold_s"))
        if spec.get("reason"):
            fault.reason = str(spec["reason"])
        self.faults.setdefault(function, deque()).append(fault)


_CONTROL_KEYS = {"faults": frozenset({"function", "mode", "times", "hold_s", "reason"}),
                 "latency": frozenset({"function", "seconds"})}


#: The longest latency or hold a control request may set (a day): 1e308 s would hold a call, and its name, for good.
LONGEST_S = 86_400


def _at_least(value: Any, least: float, name: str) -> float:
    """A control request's number, refused (400) when it is not one, is below `least` or above a day."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not least <= value <= LONGEST_S:
        raise ValueError(f'"{name}" must be a number from {least:g} to {LONGEST_S}, got {value!r}')
    if name == "times" and value != int(value):
        raise ValueError(f'"times" must be a whole number, got {value!r}')
    return float(value)


def create_app(*, token: str = "sandbox", packages: tuple[str, ...] = ("default", "basic", "pro"),
               state_path: Path | None = None) -> ASGIApp:
    """Build a fake WHM ASGI app with its own accounts, faults and latency."""
    return FakeWhm(token, packages, state_path)


def serve(
    host: str = "127.0.0.1",
    port: int = 2087,
    token: str = "sandbox",
    packages: tuple[str, ...] = ("default", "basic", "pro"),
    state_path: Path | None = None,
) -> None:
    """Run the fake WHM until interrupted."""
    exit_zero_on_stop_signals()
    uvicorn.run(create_app(token=token, packages=packages, state_path=state_path), host=host, port=port,
                log_level="warning", access_log=False, timeout_graceful_shutdown=STOP_WITHIN_S)
