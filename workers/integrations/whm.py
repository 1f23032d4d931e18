"""WHM API 1 client: one httpx transport (connection pool) per server, every failure classified once.

What `classify` raises (all IntegrationError, see domain/errors.py):

    TransientIntegrationError          whm_timeout       no answer in time (WHM may still finish)
                                       whm_unavailable   refused, reset, HTTP 5xx
    PermanentIntegrationError          whm_bad_response  other 4xx, not the API 1 envelope
    ├── WhmAuthError                   whm_auth_failed   HTTP 401/403, access denied
    └── WhmRejected                    whm_rejected      metadata.result 0
        ├── WhmAccountExists           whm_account_exists  the name or domain is taken
        └── WhmNoSuchAccount           whm_rejected      accountsummary turns it into None

Only the read-only calls are retried here, and only on whm_unavailable: a
timed-out `createacct` may still create the account, so its caller checks
`accountsummary` before trying again, and an auth failure retried gets our IP
blocked by cPHulk.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import msgspec
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from domain.errors import PermanentIntegrationError, TransientIntegrationError

_AUTH_REASON = re.compile(
    r"access denied|invalid (api )?token|token\b.*\b(expired|revoked)|not authori[sz]ed"
    r"|do(es)? not have (the )?(permission|privilege)",
    re.IGNORECASE,
)
_EXISTS_REASON = re.compile(
    r"already has an account named|already exists|\busername\b.*\bin use\b", re.IGNORECASE
)
_NO_ACCOUNT_REASON = re.compile(
    r"\b(account|user)\b.*\b(does not|doesn't) exist|failed to find the account"
    r"|no such (account|user)|(could|can) ?not find the (account|user)",
    re.IGNORECASE,
)


class WhmAuthError(PermanentIntegrationError):
    """WHM refused our credentials; never retried, as cPHulk blocks repeat offenders."""

    def __init__(self, message: str) -> None:
        super().__init__("whm_auth_failed", message)


class WhmRejected(PermanentIntegrationError):
    """WHM answered metadata.result 0; `message` is its reason, verbatim."""

    error_code = "whm_rejected"

    def __init__(self, reason: str) -> None:
        super().__init__(self.error_code, reason)


class WhmAccountExists(WhmRejected):
    """createacct found the username or domain taken; resolve with accountsummary."""

    error_code = "whm_account_exists"


class WhmNoSuchAccount(WhmRejected):
    """The account named in the call does not exist on this server."""


def classify(function: str, outcome: httpx.Response | Exception) -> dict[str, Any]:
    """Return the envelope of a successful call, or raise the error that names the failure."""
    if isinstance(outcome, httpx.TimeoutException):
        raise TransientIntegrationError("whm_timeout", f"{function}: {type(outcome).__name__}, WHM may still finish it")
    if isinstance(outcome, Exception):
        detail = f"{function}: {type(outcome).__name__}" + (f": {outcome}" if str(outcome) else "")
        if isinstance(outcome, httpx.TransportError):
            raise TransientIntegrationError("whm_unavailable", detail)
        raise PermanentIntegrationError("whm_bad_response", detail)
    status = f"HTTP {outcome.status_code} {outcome.reason_phrase}".rstrip()
    if outcome.status_code in (401, 403):
        raise WhmAuthError(f"{function}: {status}")
    if outcome.status_code >= 500 or outcome.status_code == 429:
        raise TransientIntegrationError("whm_unavailable", f"{function}: {status}")
    if not outcome.is_success:
        raise PermanentIntegrationError("whm_bad_response", f"{function}: {status}")
    envelope = _decode_envelope(outcome.content)
    if envelope is None:
        kind = outcome.headers.get("content-type", "no content type")
        raise PermanentIntegrationError("whm_bad_response", f"{function}: not a WHM API 1 envelope ({status}, {kind})")
    if str(envelope["metadata"].get("result")) == "1":
        return envelope
    reason = str(envelope["metadata"].get("reason") or "no reason given")
    if _AUTH_REASON.search(reason):
        raise WhmAuthError(f"{function}: {reason}")
    if _EXISTS_REASON.search(reason):
        raise WhmAccountExists(reason)
    if _NO_ACCOUNT_REASON.search(reason):
        raise WhmNoSuchAccount(reason)
    raise WhmRejected(reason)


def _decode_envelope(content: bytes) -> dict[str, Any] | None:
    try:
        envelope = msgspec.json.decode(content)
    except msgspec.DecodeError:
        return None
    if isinstance(envelope, dict) and isinstance(envelope.get("metadata"), dict) and "result" in envelope["metadata"]:
        return envelope
    return None


def _unavailable(exc: BaseException) -> bool:
    return isinstance(exc, TransientIntegrationError) and exc.code == "whm_unavailable"


def _encode(params: dict[str, Any]) -> dict[str, str]:
    """WHM wants booleans as 1/0 and no empty optional parameters."""
    return {k: str(int(v)) if isinstance(v, bool) else str(v) for k, v in params.items() if v is not None}


class WhmClient:
    """Async client for one WHM server's API 1, authenticated with an API token."""

    def __init__(
        self,
        base_url: str,
        username: str,
        token: str,
        *,
        create_timeout: float = 300.0,
        read_timeout: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: bool = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        connect = min(10.0, read_timeout)
        self._read_timeout = {"timeout": httpx.Timeout(read_timeout, connect=connect).as_dict()}
        self._create_timeout = {"timeout": httpx.Timeout(create_timeout, connect=connect).as_dict()}
        self._headers = {"Authorization": f"whm {username}:{token}", "Accept": "application/json"}
        # Requests go straight to the transport (its connection pool, keep-alive, TLS): an API token header
        # needs none of AsyncClient's cookies, redirects, auth flows or URL merging, which cost a worker
        # more CPU than the request itself.
        self._transport = transport or httpx.AsyncHTTPTransport(verify=verify)

    def __repr__(self) -> str:
        return f"WhmClient(base_url={self.base_url!r}, username={self.username!r})"

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._transport.aclose()

    async def __aenter__(self) -> WhmClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _call(self, function: str, params: dict[str, Any], timeout: dict | None = None,
                    secret: dict[str, Any] | None = None) -> dict:
        """One request, no retry; returns the envelope's data. `secret` params go in a POST body, never the URL."""
        request = httpx.Request("POST" if secret else "GET", f"{self.base_url}/json-api/{function}",
                                params={"api.version": "1", **_encode(params)}, headers=self._headers,
                                data=_encode(secret) if secret else None, extensions=timeout or self._read_timeout)
        outcome: httpx.Response | Exception
        try:
            outcome = await self._transport.handle_async_request(request)
            try:
                await outcome.aread()
            finally:
                await outcome.aclose()
        except httpx.HTTPError as exc:
            outcome = exc
        # Raised outside the except block so no chained httpx error carries the URL (passwords) along.
        return classify(function, outcome).get("data") or {}

    async def _read(self, function: str, params: dict[str, Any]) -> dict:
        """A read-only call: a few quick retries when WHM is briefly unreachable."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(3),
            wait=wait_exponential(multiplier=0.1, max=0.5),
            retry=retry_if_exception(_unavailable),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._call(function, params)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def createacct(
        self, *, username: str, domain: str, plan: str, password: str, contactemail: str, owner: str | None = None
    ) -> dict:
        """Create an account; slow, never retried here (a timeout may still have created it)."""
        params = {"username": username, "domain": domain, "plan": plan, "contactemail": contactemail, "owner": owner}
        return await self._call("createacct", params, timeout=self._create_timeout, secret={"password": password})

    async def verify_new_username(self, user: str) -> bool:
        """True if WHM would accept `user` as a new account name."""
        try:
            await self._read("verify_new_username", {"user": user})
        except WhmRejected:
            return False
        return True

    async def accountsummary(self, *, user: str | None = None, domain: str | None = None) -> dict | None:
        """The account with this user or domain, or None when WHM has no such account."""
        if not (user or domain):
            raise ValueError("accountsummary needs a user or a domain")
        try:
            data = await self._read("accountsummary", {"user": user, "domain": domain})
        except WhmNoSuchAccount:
            return None
        accounts = data.get("acct") or []
        return accounts[0] if accounts else None

    async def suspendacct(self, user: str, reason: str = "", disallowun: bool = False) -> None:
        """Suspend an account; `disallowun` keeps resellers from unsuspending it."""
        await self._call("suspendacct", {"user": user, "reason": reason, "disallowun": disallowun})

    async def unsuspendacct(self, user: str) -> None:
        """Lift an account's suspension."""
        await self._call("unsuspendacct", {"user": user})

    async def removeacct(self, username: str, keepdns: bool = False) -> None:
        """Terminate an account and delete its data."""
        await self._call("removeacct", {"username": username, "keepdns": keepdns})

    async def changepackage(self, user: str, pkg: str) -> None:
        """Move an account to another package (plan)."""
        await self._call("changepackage", {"user": user, "pkg": pkg})

    async def passwd(self, user: str, password: str) -> None:
        """Set an account's password."""
        await self._call("passwd", {"user": user}, secret={"password": password})

    async def listaccts(
        self, search: str | None = None, searchtype: str = "user", searchmethod: str = "exact"
    ) -> list[dict]:
        """Accounts matching `search` (all of them without it)."""
        params = {"search": search, "searchtype": searchtype, "searchmethod": searchmethod} if search else {}
        return (await self._read("listaccts", params)).get("acct") or []

    async def listpkgs(self, want: str = "all") -> list[dict]:
        """The packages (plans) this server offers."""
        return (await self._read("listpkgs", {"want": want})).get("pkg") or []
