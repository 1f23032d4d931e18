"""WHM API 1 client: one keep-alive pool (workers/integrations/http1.py) per server, every failure classified once.

What `classify` (an answer) and `classify_failure` (no answer) raise, all IntegrationError (domain/errors.py):

    TransientIntegrationError          whm_timeout       no answer in time (a change may still happen)
                                       whm_unavailable   refused, reset, broken body, TLS handshake failed,
                                                         HTTP 5xx, 408 or 429
    PermanentIntegrationError          whm_bad_response  other non-2xx (redirects are not followed),
                                                         not the API 1 envelope, not HTTP at all, a
                                                         success whose data a read cannot use (no list
                                                         of records, an account without a user, ...)
                                       whm_tls_untrusted the certificate does not verify (self-signed,
                                                         expired, other name): fix it, or trust it (README)
    ├── WhmAuthError                   whm_auth_failed   HTTP 401/403, access denied, a bad token
    └── WhmRejected                    whm_rejected      metadata.result 0 (a call not permitted too)
        ├── WhmAccountExists           whm_account_exists  the name or domain is taken
        └── WhmNoSuchAccount           whm_rejected      accountsummary turns it into None

Only the read-only calls are retried here, and only on whm_unavailable: a
timed-out `createacct` may still create the account, so its caller checks
`accountsummary` before trying again, and an auth failure retried gets our IP
blocked by cPHulk. For the same reason, once WHM refused our credentials the
client sends nothing to that server for AUTH_REFUSED_PAUSE_S (every call fails
whm_auth_failed at once), so a queue of jobs is not a queue of failed logins; and
until WHM has accepted them (a new client, or once a pause ended), the client sends
one call at a time, so a burst of jobs is one failed login, not one each.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from typing import Any, NoReturn
from urllib.parse import quote, urlsplit

import msgspec
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from domain.errors import PermanentIntegrationError, TransientIntegrationError
from workers.integrations.http1 import Origin, ProtocolError

#: WHM refusing the credentials themselves (it answers a bad token with HTTP 403; these are its texts for it). A
#: refusal of one call to a user it authenticated ("You do not have permission to ...", a reseller's ACL) is not one:
#: it is that call's whm_rejected, and pauses nothing.
_AUTH_REASON = re.compile(r"access denied|invalid (api )?token|token\b.*\b(expired|revoked)", re.IGNORECASE)
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
    """WHM answered metadata.result 0; `message` is the function and its reason, verbatim."""

    error_code = "whm_rejected"

    def __init__(self, reason: str) -> None:
        super().__init__(self.error_code, reason)


class WhmAccountExists(WhmRejected):
    """createacct found the username or domain taken; resolve with accountsummary."""

    error_code = "whm_account_exists"


class WhmNoSuchAccount(WhmRejected):
    """The account named in the call does not exist on this server."""


def classify(function: str, status: int, reason: str, content_type: str, body: bytes) -> dict[str, Any]:
    """Return the envelope of an HTTP answer, or raise the error that names what is wrong with it."""
    line = f"HTTP {status} {reason}".rstrip()
    if status in (401, 403):
        raise WhmAuthError(f"{function}: {line}")
    if status >= 500 or status in (408, 429):  # 408: a proxy gave up on the request before WHM had it
        raise TransientIntegrationError("whm_unavailable", f"{function}: {line}")
    if not 200 <= status < 300:
        raise PermanentIntegrationError("whm_bad_response", f"{function}: {line}")
    envelope = _decode_envelope(body)
    if envelope is None:
        kind = content_type or "no content type"
        raise PermanentIntegrationError("whm_bad_response", f"{function}: not a WHM API 1 envelope ({line}, {kind})")
    if str(envelope["metadata"].get("result")) == "1":
        return envelope
    reason = str(envelope["metadata"].get("reason") or "no reason given")
    if _AUTH_REASON.search(reason):
        raise WhmAuthError(f"{function}: {reason}")
    if _EXISTS_REASON.search(reason):
        raise WhmAccountExists(reason)
    if _NO_ACCOUNT_REASON.search(reason):
        raise WhmNoSuchAccount(reason)
    raise WhmRejected(f"{function}: {reason}")


#: The calls that change an account: one that timed out may still be carried out by WHM.
MUTATING = frozenset(("createacct", "suspendacct", "unsuspendacct", "removeacct", "changepackage", "passwd"))


def classify_failure(function: str, exc: BaseException) -> NoReturn:
    """Raise the error for a call that got no answer: `exc` is an OSError (timeouts included) or ProtocolError."""
    # The message has the type and an OS error's text only, never str(exc): a DNS or certificate error's
    # text may name the host, and nothing here may carry the URL, its query or the token.
    name = type(exc).__name__
    if isinstance(exc, TimeoutError):  # connecting or the whole call
        # Only a call that changes something may go on after the client gave up; a read simply got no answer.
        after = ", WHM may still finish it" if function in MUTATING else ""
        raise TransientIntegrationError("whm_timeout", f"{function}: {name}{after}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        # Permanent: trying again cannot make the certificate verify. OpenSSL's text ("self-signed certificate")
        # except for a name mismatch, whose text is the host name.
        why = "certificate is for another host" if exc.verify_code in (62, 64) else exc.verify_message
        raise PermanentIntegrationError("whm_tls_untrusted", f"{function}: {name}: {why or 'not trusted'}")
    strerror = getattr(exc, "strerror", None)  # e.g. "Connection reset by peer", "response body over ... bytes"
    detail = f"{function}: {name}: {strerror}" if isinstance(strerror, str) and strerror else f"{function}: {name}"
    if isinstance(exc, OSError):  # refused, reset, closed mid-answer (http1.ConnectionLost), DNS, TLS handshake
        raise TransientIntegrationError("whm_unavailable", detail)
    raise PermanentIntegrationError("whm_bad_response", detail)


def _decode_envelope(content: bytes) -> dict[str, Any] | None:
    try:
        envelope = msgspec.json.decode(content)
    except msgspec.DecodeError:
        return None
    if isinstance(envelope, dict) and isinstance(envelope.get("metadata"), dict) and "result" in envelope["metadata"]:
        return envelope
    return None


_FORM = {"Content-Type": "application/x-www-form-urlencoded"}
#: Connecting (TCP and TLS handshakes) gets at most this much of a call's timeout.
_CONNECT_S = 10.0


def _records(function: str, data: dict[str, Any], field: str) -> list[dict[str, Any]]:
    """`data[field]`, WHM's list of records (none when absent); whm_bad_response when it is anything else."""
    records = data.get(field) or []
    if not isinstance(records, list) or not all(isinstance(record, dict) for record in records):
        raise PermanentIntegrationError("whm_bad_response", f"{function}: data.{field} is not a list of records")
    return records


def _account(function: str, record: dict[str, Any]) -> dict[str, Any]:
    """An account record as hostq reads it: `user` and `domain` strings, `suspended` 0 or 1 (WHM answers a
    number; a string of one is taken too); whm_bad_response when it is not one."""
    suspended = record.get("suspended") or 0
    if str(suspended) not in ("0", "1") or not isinstance(record.get("user"), str) \
            or not isinstance(record.get("domain", ""), str):
        raise PermanentIntegrationError("whm_bad_response",
                                        f"{function}: an account record without a user, domain or suspended 0/1")
    return {**record, "suspended": int(suspended)}


def _unavailable(exc: BaseException) -> bool:
    return isinstance(exc, TransientIntegrationError) and exc.code == "whm_unavailable"


_PLAIN = re.compile(r"[A-Za-z0-9_.~-]*")  # what percent-encoding leaves as it is


def _encode(params: dict[str, Any]) -> str:
    """The params form-encoded; WHM wants booleans as 1/0 and no empty optional parameters."""
    # urlencode(quote_via=quote) with a shortcut for the usual plain name or value: ~2 us a call less (measured).
    pairs = []
    for name, value in params.items():
        if value is not None:
            text = str(int(value)) if isinstance(value, bool) else str(value)
            pairs.append(f"{name if _PLAIN.fullmatch(name) else quote(name, safe='')}="
                         f"{text if _PLAIN.fullmatch(text) else quote(text, safe='')}")
    return "&".join(pairs)


#: After WHM refused our credentials, seconds during which this client sends nothing more to it: each queued job
#: would otherwise be one more failed login, and cPHulk blocks an IP after a few. `hostq servers update` (new
#: credentials) makes a new client, which sends at once.
AUTH_REFUSED_PAUSE_S = 300.0


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
        verify: bool = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        parts = urlsplit(self.base_url)
        # Encoded once; each call appends the function and an encoded query to it (see _call).
        self._api = f"{quote(parts.path, safe='/%')}/json-api/"
        # The timeout bounds the whole call, as the job budgets it; the connect timeout, TCP and TLS handshake.
        self._read_timeout = read_timeout
        self._create_timeout = create_timeout
        self._connect_timeout = min(_CONNECT_S, read_timeout)
        self._origin_url = f"{parts.scheme}://{parts.netloc}"
        self._headers = {"Authorization": f"whm {username}:{token}", "Accept": "application/json"}
        self._verify = verify
        self._refused_at: float | None = None  # monotonic time of WHM's last refusal of our credentials
        self._accepted = False  # whether WHM has accepted our credentials since the client began, or last refused them
        self._refusals = 0  # how many times WHM refused them: an answer to a call sent before the last refusal proves nothing
        self._one_at_a_time: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None  # until then
        self._origin = self._pool()  # a base URL that is not http(s)://host[:port][/path] fails here, not later

    def _pool(self) -> Origin:
        """A keep-alive pool; it connects on the first call, in that call's event loop."""
        # It never resends (WHM's GETs suspend and remove accounts: retries are ours alone), uses no proxy from
        # the environment and keeps no cookies: the token header is the whole of the auth.
        return Origin(self._origin_url, verify=self._verify, headers=self._headers)

    def __repr__(self) -> str:
        return f"WhmClient(base_url={self.base_url!r}, username={self.username!r})"

    async def aclose(self) -> None:
        """Close the pool's connections; a later call opens new ones."""
        origin, self._origin = self._origin, self._pool()
        await origin.aclose()

    async def __aenter__(self) -> WhmClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _call(self, function: str, params: dict[str, Any], timeout: float | None = None,
                    secret: dict[str, Any] | None = None) -> dict:
        """One request, no retry; returns the envelope's data. `secret` params go in a POST body, never the URL.

        Until WHM has accepted the credentials, calls go one at a time: were they wrong, every call sent at once
        would be one more failed login for cPHulk. Except createacct, which may take minutes: it would hold up
        every other call meanwhile (each of hostq's attempts sends a quick read before it, which waits its turn).
        """
        if self._accepted or function == "createacct":
            return await self._send(function, params, timeout, secret)
        loop = asyncio.get_running_loop()
        if self._one_at_a_time is None or self._one_at_a_time[0] is not loop:
            self._one_at_a_time = (loop, asyncio.Lock())
        turn = self._one_at_a_time[1]
        # The wait for its turn counts in the call's timeout: behind a WHM that does not answer, the calls in line
        # would otherwise take one timeout each in turn, the last of a burst many times its own.
        budget = timeout or self._read_timeout
        deadline = time.monotonic() + budget
        try:
            async with asyncio.timeout(budget):
                await turn.acquire()
        except TimeoutError:
            raise TransientIntegrationError(
                "whm_timeout", f"{function}: not sent: no answer from WHM to an earlier call within {budget:g} s "
                "(until WHM has accepted hostq's credentials, calls to a server go one at a time)") from None
        try:
            left = max(deadline - time.monotonic(), 0.001)
            if not self._accepted:
                return await self._send(function, params, left, secret)
        finally:
            turn.release()
        return await self._send(function, params, left, secret)  # accepted while this call waited: go along

    async def _send(self, function: str, params: dict[str, Any], timeout: float | None,
                    secret: dict[str, Any] | None) -> dict:
        if self._refused_at is not None and (ago := time.monotonic() - self._refused_at) < AUTH_REFUSED_PAUSE_S:
            raise WhmAuthError(f"{function}: not sent: WHM refused hostq's credentials for this server {ago:.0f} s "
                               "ago, and repeated failed logins get hostq's IP blocked (cPHulk): fix the token with "
                               "`hostq servers update`, then retry the job")
        refusals = self._refusals
        query = _encode(params)
        target = f"{self._api}{function}?api.version=1{'&' if query else ''}{query}"
        form = _encode(secret).encode() if secret else None
        answer: tuple[int, str, str, bytes] | BaseException
        try:
            response = await self._origin.request(
                "POST" if secret else "GET", target, _FORM if secret else None, form,
                timeout=timeout or self._read_timeout, connect_timeout=self._connect_timeout)
            answer = (response.status, response.reason, response.header(b"content-type") or "", response.body)
        except (OSError, ProtocolError) as exc:  # OSError: refused, reset, TLS, timeouts (TimeoutError)
            answer = exc
        # Raised outside the except block so no chained error (a DNS or TLS one may name the host) goes along.
        if isinstance(answer, BaseException):
            classify_failure(function, answer)
        try:
            envelope = classify(function, *answer)
        except WhmAuthError:
            self._refused_at, self._accepted, self._refusals = time.monotonic(), False, self._refusals + 1
            raise
        except WhmRejected:  # WHM authenticated us and answered
            self._accepted = self._accepted or refusals == self._refusals
            raise
        self._accepted = self._accepted or refusals == self._refusals
        data = envelope.get("data") or {}
        if isinstance(data, dict):
            return data
        if function in MUTATING:  # done, as result 1 says: what came with it is never read
            return {}
        raise PermanentIntegrationError("whm_bad_response", f"{function}: data is not an object")

    async def _read(self, function: str, params: dict[str, Any]) -> dict:
        """A read-only call: a few quick retries when WHM is briefly unreachable."""
        try:
            return await self._call(function, params)
        except TransientIntegrationError as exc:
            if exc.code != "whm_unavailable":
                raise
            first = exc
        # Tenacity only once the first attempt failed: building AsyncRetrying costs more CPU than a request.
        # It replays that failure as its attempt 1, so it counts and spaces all three attempts.
        retrying = AsyncRetrying(
            stop=stop_after_attempt(3),
            wait=wait_exponential(multiplier=0.1, max=0.5),
            retry=retry_if_exception(_unavailable),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if attempt.retry_state.attempt_number == 1:
                    raise first
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
        return await self.username_refusal(user) is None

    async def username_refusal(self, user: str) -> str | None:
        """Why WHM would refuse `user` as a new account name, in its own words (verify_new_username), or None."""
        try:
            await self._read("verify_new_username", {"user": user})
        except WhmRejected as exc:
            return exc.message.removeprefix("verify_new_username: ")
        return None

    async def accountsummary(self, *, user: str | None = None, domain: str | None = None) -> dict | None:
        """The account with this user or domain, or None when WHM has no such account."""
        if not (user or domain):
            raise ValueError("accountsummary needs a user or a domain")
        try:
            data = await self._read("accountsummary", {"user": user, "domain": domain})
        except WhmNoSuchAccount:
            return None
        accounts = _records("accountsummary", data, "acct")
        return _account("accountsummary", accounts[0]) if accounts else None

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
        records = _records("listaccts", await self._read("listaccts", params), "acct")
        return [_account("listaccts", record) for record in records]

    async def listpkgs(self, want: str = "all") -> list[dict]:
        """The packages (plans) this server offers."""
        return _records("listpkgs", await self._read("listpkgs", {"want": want}), "pkg")
