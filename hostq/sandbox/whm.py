"""The fake WHM: WHM API 1 shapes, accounts in memory (kept in a file too with `--state`), and a control API.

A raw ASGI app rather than Litestar: benchmarks run through it, and the `reset`
fault must drop the connection, which a framework would turn into a 500.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter, deque
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl

import msgspec
import uvicorn

from hostq.sandbox import statefile
from hostq.sandbox.asgi import TEXT, SandboxApp, drop_connection, hold, respond

ASGIApp = Callable[..., Any]
FUNCTIONS = frozenset({
    "createacct", "verify_new_username", "accountsummary", "suspendacct", "unsuspendacct",
    "removeacct", "changepackage", "passwd", "listaccts", "listpkgs",
})
#: The functions that change accounts: after each, a fake started with a state file writes it.
CHANGES = frozenset({"createacct", "suspendacct", "unsuspendacct", "removeacct", "changepackage"})
FAULT_MODES = frozenset({"http_500", "reset", "timeout", "result_0", "timeout_then_create", "result_0_leave_user"})
NO_ACCOUNT = "Account does not exist."
_USERNAME = re.compile(r"[a-z0-9]+")
_DOMAIN = re.compile(r"(?=.{4,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")


class Rejected(Exception):
    """A call WHM answers with metadata.result 0; the argument is the reason."""


@dataclass
class Account:
    user: str
    domain: str
    plan: str
    owner: str
    email: str
    created_at: datetime
    ip: str = "192.0.2.10"
    suspended: bool = False
    suspendreason: str = "not suspended"

    def summary(self) -> dict[str, Any]:
        """The account as accountsummary and listaccts show it."""
        return {
            "user": self.user, "domain": self.domain, "plan": self.plan, "owner": self.owner,
            "email": self.email, "ip": self.ip, "suspended": int(self.suspended),
            "suspendreason": self.suspendreason, "diskused": "0M", "disklimit": "unlimited",
            "startdate": self.created_at.strftime("%y %b %d %H:%M"),
            "unix_startdate": int(self.created_at.timestamp()), "partition": "home",
            "theme": "jupiter", "shell": "/bin/bash", "is_locked": 0,
        }

    def control(self) -> dict[str, Any]:
        """The account as GET /__sandbox/accounts shows it."""
        return {
            "user": self.user, "domain": self.domain, "plan": self.plan,
            "suspended": int(self.suspended),
            "created_at": self.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


@dataclass
class Fault:
    function: str
    mode: str
    times: int = 1
    hold_s: float = 600.0
    reason: str = "An internal error occurred (sandbox fault)."


class FakeWhm(SandboxApp):
    """One fake WHM server; all state lives on the instance, and its accounts also in `state_path` when given
    (written after every change, read at start), so that a restarted fake still has them, as a real WHM would."""

    def __init__(self, token: str, packages: tuple[str, ...], state_path: Path | None = None) -> None:
        self.token = token
        self.packages = tuple(packages)
        self.accounts: dict[str, Account] = {}
        self.by_domain: dict[str, str] = {}
        self.by_prefix: dict[str, str] = {}
        # System users a failed createacct left behind (fault `result_0_leave_user`): the name stays in use.
        self.leftover_users: set[str] = set()
        self.faults: dict[str, deque[Fault]] = {}
        self.latency: dict[str, float] = {}
        self.calls: Counter[str] = Counter()
        self.state_path = state_path
        if state_path is not None and state_path.exists():
            self._load(state_path)

    def _load(self, path: Path) -> None:
        def parse(state: dict) -> tuple[list[Account], set[str]]:
            return ([Account(**{**fields, "created_at": datetime.fromisoformat(fields["created_at"])})
                     for fields in state["accounts"]], set(state["leftover_users"]))

        accounts, leftover = statefile.read(path, "fake WHM", parse)
        for account in accounts:
            self._keep(account)
        self.leftover_users.update(leftover)

    def _keep(self, account: Account) -> None:
        self.accounts[account.user], self.by_domain[account.domain] = account, account.user
        self.by_prefix[account.user[:8]] = account.user

    def save(self) -> None:
        """Write the accounts to the state file, if any (whole, then renamed: a kill never leaves half a file)."""
        if self.state_path is None:
            return
        accounts = [{**asdict(a), "created_at": a.created_at.isoformat()} for a in self.accounts.values()]
        statefile.write(self.state_path, {"accounts": accounts, "leftover_users": sorted(self.leftover_users)})

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
        if caller is None:
            return await respond(send, 403, b"Access denied", TEXT)
        params = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        if body:
            params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        if params.get("api.version") != "1":
            # WHM without api.version=1 speaks API 0, whose shape clients must not mistake for API 1.
            return await respond(send, 200, b'{"status":0,"statusmsg":"The sandbox only speaks api.version=1."}')
        fault = self.take_fault(function)
        if delay := self.latency.get(function):
            await asyncio.sleep(delay)
        if fault is None:
            return await respond(send, 200, self.run(function, params, caller))
        if fault.mode == "http_500":
            return await respond(send, 500, b"Internal Server Error", TEXT)
        if fault.mode == "reset":
            return await drop_connection(send)
        if fault.mode == "result_0":
            return await respond(send, 200, _envelope(function, 0, fault.reason, {}))
        if fault.mode == "result_0_leave_user":  # as a real failed create can: the Unix user stays behind
            if function == "createacct" and (user := params.get("username")):
                self.leftover_users.add(user)
                self.save()
            return await respond(send, 200, _envelope(function, 0, fault.reason, {}))
        answer = self.run(function, params, caller) if fault.mode == "timeout_then_create" else None
        if not await hold(receive, fault.hold_s):
            return None
        if answer is None:
            return await respond(send, 504, b"Gateway Timeout", TEXT)
        return await respond(send, 200, answer)

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

    def run(self, function: str, params: dict[str, str], caller: str) -> bytes:
        """Perform one function and encode its envelope."""
        handler = getattr(self, f"_{function}", None) if function in FUNCTIONS else None
        if handler is None:
            reason = f'Unknown app ("{function}") requested for this version (1) of the API.'
            return _envelope(function, 0, reason, {})
        try:
            reason, data = handler(params, caller)
        except Rejected as exc:
            return _envelope(function, 0, str(exc), {})
        if function in CHANGES:
            self.save()
        return _envelope(function, 1, reason, data)

    def check_username(self, user: str) -> None:
        """Raise Rejected unless `user` is a valid, free WHM username."""
        if not user:
            raise Rejected("You must specify a username.")
        if len(user) > 16:
            raise Rejected(f"The username “{user}” is too long: usernames cannot exceed 16 characters.")
        if not _USERNAME.fullmatch(user):
            raise Rejected("Usernames may only contain lowercase letters (a-z) and digits (0-9).")
        if user[0].isdigit():
            raise Rejected("Usernames cannot begin with a digit.")
        if user.startswith("test"):
            raise Rejected("Usernames cannot begin with “test”.")
        if user in self.accounts:
            raise Rejected(f'This system already has an account named "{user}".')
        if user in self.leftover_users:
            raise Rejected(f"The username “{user}” is in use by an existing system user.")
        if (other := self.by_prefix.get(user[:8])) is not None:
            raise Rejected(f"The first eight characters of “{user}” must differ from those of the account “{other}”.")

    def _createacct(self, p: dict[str, str], caller: str) -> tuple[str, dict]:
        user, domain, plan = p.get("username", ""), p.get("domain", "").lower(), p.get("plan", "")
        self.check_username(user)
        if not _DOMAIN.fullmatch(domain):
            raise Rejected(f"“{domain}” is not a valid domain.")
        if (holder := self.by_domain.get(domain)) is not None:
            raise Rejected(f'The domain "{domain}" already exists in the userdata for the user "{holder}".')
        if plan not in self.packages:
            raise Rejected(f"Unable to find package “{plan}”.")
        if not p.get("password"):
            raise Rejected("You must specify a password.")
        owner = p.get("owner") or caller
        account = Account(user, domain, plan, owner, p.get("contactemail", ""), datetime.now(UTC))
        self._keep(account)
        names = {"nameserver": "ns1.sandbox.test", "nameserver2": "ns2.sandbox.test",
                 "nameserver3": None, "nameserver4": None}
        return "Account Creation Ok", {"ip": account.ip, **names, "package": plan}

    def _verify_new_username(self, p: dict[str, str], caller: str) -> tuple[str, dict]:
        self.check_username(p.get("user", ""))
        return "OK", {}

    def account(self, p: dict[str, str], key: str = "user") -> Account:
        """The account named by `key` (or by `domain`), or Rejected as WHM says it."""
        user = p.get(key) or self.by_domain.get(p.get("domain", "").lower(), "")
        if not user and not p.get("domain"):
            raise Rejected(f"The “{key}” parameter is required.")
        if (account := self.accounts.get(user)) is None:
            raise Rejected(NO_ACCOUNT)
        return account

    def _accountsummary(self, p: dict[str, str], caller: str) -> tuple[str, dict]:
        return "OK", {"acct": [self.account(p).summary()]}

    def _suspendacct(self, p: dict[str, str], caller: str) -> tuple[str, dict]:
        account = self.account(p)
        account.suspended, account.suspendreason = True, p.get("reason") or "Unknown"
        return f"Account “{account.user}” suspended.", {}

    def _unsuspendacct(self, p: dict[str, str], caller: str) -> tuple[str, dict]:
        account = self.account(p)
        account.suspended, account.suspendreason = False, "not suspended"
        return f"Account “{account.user}” unsuspended.", {}

    def _removeacct(self, p: dict[str, str], caller: str) -> tuple[str, dict]:
        # `user` is the deprecated name of `username`; WHM still accepts it.
        account = self.account(p, "username" if p.get("username") else "user")
        del self.accounts[account.user], self.by_domain[account.domain]
        if self.by_prefix.get(account.user[:8]) == account.user:
            del self.by_prefix[account.user[:8]]
        return f"{account.user} account removed", {}

    def _changepackage(self, p: dict[str, str], caller: str) -> tuple[str, dict]:
        account = self.account(p)
        if (pkg := p.get("pkg", "")) not in self.packages:
            raise Rejected(f"Unable to find package “{pkg}”.")
        account.plan = pkg
        return f"Account Upgrade/Downgrade Complete for {account.user}", {}

    def _passwd(self, p: dict[str, str], caller: str) -> tuple[str, dict]:
        account = self.account(p)
        if not p.get("password"):
            raise Rejected("You must specify a password.")
        return f"Password changed for user {account.user}", {"app": []}

    def _listaccts(self, p: dict[str, str], caller: str) -> tuple[str, dict]:
        accounts = list(self.accounts.values())
        if search := p.get("search"):
            field = {"user": "user", "domain": "domain", "owner": "owner", "package": "plan"}.get(
                p.get("searchtype", "user"), "user")
            try:
                pattern = re.compile(search if p.get("searchmethod") == "regex" else re.escape(search) + "$")
            except re.error:
                raise Rejected(f"Invalid regular expression: {search}") from None
            accounts = [a for a in accounts if pattern.match(getattr(a, field))]
        return "Ok", {"acct": [a.summary() for a in accounts]}

    def _listpkgs(self, p: dict[str, str], caller: str) -> tuple[str, dict]:
        return "Ok", {"pkg": [{"name": name, "QUOTA": "unlimited", "BWLIMIT": "unlimited"} for name in self.packages]}

    def control(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        """Answer one /__sandbox/ call: accounts, leftover system users, faults, latency, call counts."""
        match method, path:
            case "GET", "accounts":
                return 200, {"accounts": [a.control() for a in self.accounts.values()]}
            case "DELETE", "accounts":
                for store in (self.accounts, self.by_domain, self.by_prefix, self.leftover_users):
                    store.clear()
                self.save()
                return 200, {"accounts": []}
            case "GET" | "DELETE", "calls":
                counts = dict(self.calls)
                if method == "DELETE":
                    self.calls.clear()
                return 200, {"calls": counts}
            case "GET", "system-users":
                return 200, {"system_users": sorted(self.leftover_users)}
            case "DELETE", str(user_path) if user_path.startswith("system-users/"):
                # What an operator does on a real server (userdel) for a Unix user a failed createacct left.
                user = user_path[len("system-users/"):]
                if user not in self.leftover_users:
                    return 404, {"error": f"no system user {user!r} without an account"}
                self.leftover_users.discard(user)
                self.save()
                return 200, {"system_users": sorted(self.leftover_users)}
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
        function = str(spec["function"]) if isinstance(spec, dict) and spec.get("function") else ""
        if not function:
            raise ValueError('"function" is required')
        if what == "latency":
            self.latency[function] = float(spec.get("seconds", 0))
            if self.latency[function] <= 0:
                del self.latency[function]
            return
        if spec.get("mode") not in FAULT_MODES:
            raise ValueError(f'"mode" must be one of {sorted(FAULT_MODES)}')
        fault = Fault(function, spec["mode"], int(spec.get("times", 1)), float(spec.get("hold_s", 600.0)))
        if spec.get("reason"):
            fault.reason = str(spec["reason"])
        if fault.times > 0:
            self.faults.setdefault(function, deque()).append(fault)


def _envelope(function: str, result: int, reason: str, data: dict) -> bytes:
    metadata = {"version": 1, "result": result, "reason": reason, "command": function, "output": {"raw": ""}}
    return msgspec.json.encode({"metadata": metadata, "data": data})


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
    uvicorn.run(create_app(token=token, packages=packages, state_path=state_path), host=host, port=port,
                log_level="warning", access_log=False)
