"""What WhmClient sends and how often: a local aiohttp server answers from a script and records each request."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from domain.errors import IntegrationError, PermanentIntegrationError, TransientIntegrationError
from workers.integrations.whm import WhmAuthError, WhmClient

TOKEN = "t0ken-SECRET"
PASSWORD = "hunter2 &=?SECRET"  # characters that need encoding, wherever it travels
Step = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    raw_query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Whm:
    """The server's script (the last step repeats), what it saw, and a client for it."""

    url: str
    script: list[Step] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    def client(self, **options) -> WhmClient:
        return WhmClient(self.url, options.pop("username", "root"), TOKEN, **options)


def status(code: int, text: str = "") -> Step:
    async def step(request: web.Request) -> web.StreamResponse:
        return web.Response(status=code, text=text)
    return step


def envelope(result: int = 1, reason: str = "OK", data: dict | None = None) -> Step:
    body = {"metadata": {"version": 1, "result": result, "reason": reason}, "data": data or {}}

    async def step(request: web.Request) -> web.StreamResponse:
        return web.json_response(body)
    return step


async def reset(request: web.Request) -> web.StreamResponse:
    """Drop the connection with a TCP RST and no answer, as a crashed cpsrvd would."""
    # SO_LINGER 0 makes the close send RST instead of FIN.
    request.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    request.transport.abort()
    await asyncio.sleep(0)
    return web.Response()


def hold(seconds: float) -> Step:
    async def step(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return web.Response(status=504)
    return step


@pytest.fixture
async def whm():
    recorder = Whm(url="")

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        recorder.seen.append(Seen(request.method, request.path, dict(request.query), request.query_string,
                                  dict(request.headers), body))
        return await recorder.script[min(len(recorder.seen), len(recorder.script)) - 1](request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    recorder.url = str(server.make_url("/"))
    yield recorder
    await server.close()


async def test_read_calls_retry_briefly_on_5xx(whm):
    whm.script = [status(503), status(503), envelope(data={"pkg": [{"name": "pro"}]})]
    started = time.monotonic()
    async with whm.client() as client:
        assert await client.listpkgs() == [{"name": "pro"}]
    assert len(whm.seen) == 3
    assert 0.25 <= time.monotonic() - started < 2  # 0.1 s, then 0.2 s between attempts


async def test_read_calls_give_up_after_three_attempts(whm):
    whm.script = [reset]
    async with whm.client() as client:
        with pytest.raises(TransientIntegrationError) as caught:
            await client.accountsummary(user="alice")
    assert caught.value.code == "whm_unavailable"
    assert len(whm.seen) == 3


async def test_create_mutations_and_auth_failures_are_never_retried(whm):
    whm.script = [status(503)]
    async with whm.client() as client:
        with pytest.raises(TransientIntegrationError):
            await client.createacct(username="alice", domain="a.example", plan="pro", password="x", contactemail="")
    assert len(whm.seen) == 1
    # A reset GET is not resent either (aiohttp would, taking GET as idempotent; http1 never resends).
    whm.script, whm.seen = [reset], []
    async with whm.client() as client:
        with pytest.raises(TransientIntegrationError):
            await client.suspendacct("alice")
    assert len(whm.seen) == 1
    whm.script, whm.seen = [status(403, "Access denied")], []
    async with whm.client() as client:
        with pytest.raises(WhmAuthError):
            await client.listaccts()
    assert len(whm.seen) == 1


async def test_request_shape(whm):
    whm.script = [envelope()]
    async with WhmClient(whm.url, "reseller", "tok") as client:
        await client.removeacct("alice", keepdns=True)
    [request] = whm.seen
    assert request.method == "GET"
    assert request.path == "/json-api/removeacct"
    assert request.query == {"api.version": "1", "username": "alice", "keepdns": "1"}
    assert request.headers["Authorization"] == "whm reseller:tok"
    assert request.headers["Accept"] == "application/json"
    assert request.body == b""


async def test_query_values_are_encoded(whm):
    whm.script = [envelope()]
    async with whm.client() as client:
        await client.suspendacct("alice", "unpaid & overdue: 100%", disallowun=True)
    assert whm.seen[0].query == {"api.version": "1", "user": "alice", "reason": "unpaid & overdue: 100%",
                                 "disallowun": "1"}


async def test_passwords_travel_in_a_form_body_never_the_url(whm):
    whm.script = [envelope(data={"ip": "192.0.2.1"})]
    async with whm.client() as client:
        await client.createacct(username="alice", domain="a.example", plan="pro", password=PASSWORD,
                                contactemail="ops@a.example")
        await client.passwd("alice", PASSWORD)
    create, passwd = whm.seen
    assert (create.method, create.path, passwd.method, passwd.path) == (
        "POST", "/json-api/createacct", "POST", "/json-api/passwd")
    assert create.query == {"api.version": "1", "username": "alice", "domain": "a.example", "plan": "pro",
                            "contactemail": "ops@a.example"}
    assert passwd.query == {"api.version": "1", "user": "alice"}
    for request in (create, passwd):
        assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
        assert parse_qs(request.body.decode()) == {"password": [PASSWORD]}
        assert "SECRET" not in request.raw_query


@pytest.mark.parametrize(
    "step",
    [status(500, "Internal error"), status(401, f"Bad token {TOKEN}"), status(404, "Not Found"),
     status(200, "<html>login</html>"), envelope(0, "Sorry"), reset, hold(2)],
    ids=["500", "401", "404", "html", "result_0", "reset", "timeout"],
)
async def test_errors_never_carry_the_token_or_the_password(whm, step):
    whm.script = [step]
    async with whm.client(create_timeout=0.3) as client:
        with pytest.raises(IntegrationError) as caught:
            await client.createacct(username="alice", domain="a.example", plan="pro", password=PASSWORD,
                                    contactemail="")
    error = caught.value
    assert error.__cause__ is None and error.__context__ is None  # no transport error (host, URL) chained
    shown = json.dumps([str(error), repr(error), error.message, traceback.format_exception(error)])
    assert "SECRET" not in shown and whm.url.rstrip("/") not in shown


async def test_connections_are_made_on_first_use_and_again_after_close(whm):
    whm.script = [envelope()]
    client = whm.client()
    assert client._origin._loop is None  # connections are made in the loop of the first call
    await client.unsuspendacct("alice")
    origin = client._origin
    assert len(origin._idle) == 1
    await client.aclose()
    assert not origin._idle and client._origin is not origin
    with pytest.raises(RuntimeError):
        await origin.request("GET", "/", timeout=1, connect_timeout=1)
    await client.unsuspendacct("alice")
    await client.aclose()
    assert len(whm.seen) == 2


async def test_one_connection_serves_successive_calls(whm):
    peers = set()

    async def note_peer(request: web.Request) -> web.StreamResponse:
        peers.add(request.transport.get_extra_info("peername"))
        return await envelope()(request)
    whm.script = [note_peer]
    async with whm.client() as client:
        for _ in range(3):
            await client.unsuspendacct("alice")
    assert len(whm.seen) == 3 and len(peers) == 1


async def test_headers_sent(whm):
    whm.script = [envelope()]
    async with whm.client() as client:
        await client.passwd("alice", PASSWORD)
    [request] = whm.seen
    host, port = whm.url.split("//")[1].rstrip("/").split(":")
    assert request.headers["Host"] == f"{host}:{port}"
    assert request.headers["User-Agent"] == "hostq"
    assert request.headers["Content-Length"] == str(len(request.body))
    assert "Accept-Encoding" not in request.headers  # no decompression: bodies come as sent


def test_a_client_made_outside_any_loop_opens_nothing():
    client = WhmClient("http://whm.test:2087/", "root", TOKEN)
    assert client._origin._loop is None and not client._origin._idle
    assert repr(client) == "WhmClient(base_url='http://whm.test:2087', username='root')"


async def test_a_redirect_is_not_followed(whm):
    async def redirect(request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": "/json-api/elsewhere"})
    whm.script = [redirect]
    async with whm.client() as client:
        with pytest.raises(PermanentIntegrationError) as caught:
            await client.listpkgs()
    assert (caught.value.code, caught.value.message) == ("whm_bad_response", "listpkgs: HTTP 302 Found")
    assert len(whm.seen) == 1


@pytest.mark.parametrize("url", ["whm.test:2087", "ftp://whm.test", "https://root:pw@whm.test:2087"])
def test_a_base_url_that_is_not_http_is_refused_at_once(url):
    with pytest.raises(ValueError) as caught:
        WhmClient(url, "root", TOKEN)
    assert "whm.test" not in str(caught.value) and "pw" not in str(caught.value)


async def test_a_base_url_with_a_path_keeps_it(whm):
    whm.script = [envelope()]
    async with WhmClient(whm.url + "prefix/", "root", TOKEN) as client:
        await client.unsuspendacct("alice")
    assert whm.seen[0].path == "/prefix/json-api/unsuspendacct"


async def test_a_bad_response_is_permanent(whm):
    whm.script = [status(200, "not json")]
    async with whm.client() as client:
        with pytest.raises(PermanentIntegrationError) as caught:
            await client.listpkgs()
    assert caught.value.code == "whm_bad_response"
    assert caught.value.message == "listpkgs: not a WHM API 1 envelope (HTTP 200 OK, text/plain; charset=utf-8)"
    assert len(whm.seen) == 1


def success_with(data: object) -> Step:
    """result 1, with `data` as given (of any shape)."""
    async def step(request: web.Request) -> web.StreamResponse:
        return web.json_response({"metadata": {"version": 1, "result": 1, "reason": "OK"}, "data": data})
    return step


@pytest.mark.parametrize("data, call", [
    (["acct"], "accountsummary"),  # data not an object
    ({"acct": {"user": "alice"}}, "accountsummary"),  # acct not a list
    ({"acct": ["alice"]}, "accountsummary"),  # a record that is not an object
    ({"acct": [{"domain": "a.example", "suspended": 0}]}, "accountsummary"),  # no user
    ({"acct": [{"user": "alice", "domain": "a.example", "suspended": "yes"}]}, "accountsummary"),
    ({"acct": [{"user": "alice", "domain": ["a.example"]}]}, "listaccts"),
    ({"pkg": "pro"}, "listpkgs"),
])
async def test_a_success_whose_data_has_another_shape_is_a_bad_response(whm, data, call):
    """Classified once, in the client: not a KeyError or ValueError in the caller, retried as a bug would be."""
    whm.script = [success_with(data)]
    async with whm.client() as client:
        with pytest.raises(PermanentIntegrationError) as caught:
            await (client.accountsummary(user="alice") if call == "accountsummary" else getattr(client, call)())
    assert caught.value.code == "whm_bad_response", caught.value.message
    assert caught.value.message.startswith(f"{call}: ")
    assert len(whm.seen) == 1


async def test_account_records_are_read_with_suspended_as_a_number(whm):
    whm.script = [success_with({"acct": [{"user": "alice", "domain": "a.example", "suspended": "1"}]})]
    async with whm.client() as client:
        assert (await client.accountsummary(user="alice"))["suspended"] == 1
        assert [a["suspended"] for a in await client.listaccts()] == [1]


async def test_a_change_that_succeeded_is_not_failed_for_what_came_with_it(whm):
    """result 1 on suspendacct: WHM suspended the account; a `data` of another shape is never read."""
    whm.script = [success_with(["suspended"])]
    async with whm.client() as client:
        await client.suspendacct("alice")
    assert len(whm.seen) == 1


async def test_after_a_refused_login_the_client_sends_nothing_to_that_server_for_a_while(whm, monkeypatch):
    """Each queued job would be one more failed login, and cPHulk blocks the IP after a few."""
    from workers.integrations import whm as whm_module
    whm.script = [status(403, "Access denied"), envelope(data={"pkg": [{"name": "pro"}]})]
    async with whm.client() as client:
        with pytest.raises(WhmAuthError):
            await client.listpkgs()
        with pytest.raises(WhmAuthError) as caught:
            await client.suspendacct("alice")
        assert len(whm.seen) == 1  # the second call was never sent
        assert "not sent" in caught.value.message and "hostq servers update" in caught.value.message
        monkeypatch.setattr(whm_module, "AUTH_REFUSED_PAUSE_S", 0.0)  # the pause is over
        assert await client.listpkgs() == [{"name": "pro"}]
    assert len(whm.seen) == 2
    async with whm.client() as fresh:  # new credentials (hostq servers update) make a new client: sent at once
        monkeypatch.setattr(whm_module, "AUTH_REFUSED_PAUSE_S", 300.0)
        assert await fresh.listpkgs() == [{"name": "pro"}]


async def test_until_whm_accepts_the_credentials_calls_go_one_at_a_time(whm):
    """A burst of jobs right after a token was revoked is one failed login, not one per job in flight."""
    whm.script = [status(403, "Access denied")]
    async with whm.client() as client:
        refused = await asyncio.gather(*(client.verify_new_username(f"user{n}") for n in range(20)),
                                       return_exceptions=True)
    assert all(isinstance(e, WhmAuthError) for e in refused), refused
    assert len(whm.seen) == 1


async def test_behind_a_whm_that_does_not_answer_calls_waiting_their_turn_keep_to_their_timeout(whm):
    """Until WHM has answered once, calls go one at a time; the wait for a turn counts in a call's timeout, or the
    last of a burst of jobs behind a hung WHM would wait one timeout per call ahead of it."""
    async def hung(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.json_response({})

    whm.script = [hung]
    async with whm.client(read_timeout=0.3) as client:
        started = time.monotonic()
        failed = await asyncio.gather(*(client.verify_new_username(f"user{n}") for n in range(4)),
                                      return_exceptions=True)
        took = time.monotonic() - started
    assert all(isinstance(e, TransientIntegrationError) and e.code == "whm_timeout" for e in failed), failed
    assert took < 0.55, took  # one timeout for them all, not 0.3 s more for each call in line
    assert len(whm.seen) == 1 and sum("not sent" in e.message for e in failed) == 3, failed


async def test_once_whm_accepted_the_credentials_calls_go_together(whm):
    slow = 0.2

    async def accepted(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(slow)
        return web.json_response({"metadata": {"version": 1, "result": 1, "reason": "OK"}, "data": {}})

    whm.script = [accepted]
    async with whm.client() as client:
        started = time.monotonic()
        await asyncio.gather(*(client.verify_new_username(f"user{n}") for n in range(10)))
        took = time.monotonic() - started
        # the first proves the credentials, alone; those that waited for it then go at once, not one by one
        assert 2 * slow <= took < 4 * slow, took
        started = time.monotonic()
        await asyncio.gather(*(client.verify_new_username(f"user{n}") for n in range(8)))
        assert time.monotonic() - started < 2 * slow  # and every call after
    assert len(whm.seen) == 18


async def test_an_answer_to_a_call_sent_before_a_refusal_does_not_vouch_for_the_token(whm, monkeypatch):
    """A createacct sent while the token was still good succeeds after WHM refused it to another call: the next
    calls, once the pause is over, still go one at a time."""
    from workers.integrations import whm as whm_module

    async def slow_success(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.3)
        return web.json_response({"metadata": {"version": 1, "result": 1, "reason": "OK"}, "data": {}})

    whm.script = [slow_success, status(403, "Access denied")]
    async with whm.client() as client:
        create = asyncio.ensure_future(client.createacct(username="alice", domain="a.example", plan="basic",
                                                         password=PASSWORD, contactemail="a@example.com"))
        await asyncio.sleep(0.1)
        with pytest.raises(WhmAuthError):
            await client.listpkgs()
        await create
        monkeypatch.setattr(whm_module, "AUTH_REFUSED_PAUSE_S", 0.5)
        await asyncio.sleep(0.6)  # the pause is over
        refused = await asyncio.gather(*(client.verify_new_username(f"user{n}") for n in range(20)),
                                       return_exceptions=True)
    assert all(isinstance(e, WhmAuthError) for e in refused), refused
    assert len(whm.seen) == 3  # the create, the refused listpkgs, and one of the twenty


async def test_a_call_whm_does_not_permit_fails_alone_and_pauses_nothing(whm):
    """A reseller's ACL refusing one call (WHM authenticated us) is that call's whm_rejected: every other job on
    the server goes on."""
    reason = 'You do not have permission to assign the package "root_gold".'
    whm.script = [envelope(0, reason), envelope(data={"pkg": [{"name": "pro"}]})]
    async with whm.client() as client:
        with pytest.raises(PermanentIntegrationError) as caught:
            await client.changepackage("alice", "root_gold")
        assert (caught.value.code, caught.value.message) == ("whm_rejected", f"changepackage: {reason}")
        assert await client.listpkgs() == [{"name": "pro"}]
    assert len(whm.seen) == 2
