"""How the WHM client reads answers: one classification, no network."""

from __future__ import annotations

import httpx
import pytest

from domain.errors import PermanentIntegrationError, TransientIntegrationError
from workers.integrations.whm import (
    WhmAccountExists,
    WhmAuthError,
    WhmClient,
    WhmNoSuchAccount,
    WhmRejected,
    classify,
)


def envelope(result: int | str, reason: str = "OK", data: dict | None = None) -> httpx.Response:
    metadata = {"version": 1, "result": result, "reason": reason, "command": "createacct", "output": {"raw": ""}}
    return httpx.Response(200, json={"metadata": metadata, "data": data or {}})


@pytest.mark.parametrize("result", [1, "1"])
def test_success_returns_the_envelope(result):
    assert classify("createacct", envelope(result, data={"ip": "192.0.2.1"}))["data"] == {"ip": "192.0.2.1"}


@pytest.mark.parametrize(
    "reason",
    [
        'This system already has an account named "alice".',
        'The domain "alice.example" already exists in the userdata for the user "bob".',
        "The username alice is already in use.",
    ],
)
def test_taken_name_or_domain_is_account_exists_with_the_reason_kept(reason):
    with pytest.raises(WhmAccountExists) as caught:
        classify("createacct", envelope(0, reason))
    assert caught.value.code == "whm_account_exists"
    assert caught.value.message == reason
    assert not caught.value.retryable


@pytest.mark.parametrize("reason", ["Account does not exist.", 'Failed to find the account "ghost".'])
def test_missing_account_is_recognised(reason):
    with pytest.raises(WhmNoSuchAccount) as caught:
        classify("accountsummary", envelope(0, reason))
    assert caught.value.code == "whm_rejected"


@pytest.mark.parametrize("reason", ["Unable to find package “gold”.", "“bad_domain” is not a valid domain."])
def test_other_result_0_is_rejected_and_permanent(reason):
    with pytest.raises(WhmRejected) as caught:
        classify("createacct", envelope(0, reason))
    assert type(caught.value) is WhmRejected
    assert (caught.value.code, caught.value.message) == ("whm_rejected", reason)


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(401, text="Access denied"),
        httpx.Response(403, text="<html>Access denied</html>"),
        envelope(0, "Access denied"),
        envelope(0, "Invalid API token."),
    ],
)
def test_auth_failures_are_permanent(response):
    with pytest.raises(WhmAuthError) as caught:
        classify("listpkgs", response)
    assert caught.value.code == "whm_auth_failed"
    assert isinstance(caught.value, PermanentIntegrationError)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_transient_unavailable(status):
    with pytest.raises(TransientIntegrationError) as caught:
        classify("createacct", httpx.Response(status, text="down"))
    assert caught.value.code == "whm_unavailable"
    assert f"HTTP {status}" in caught.value.message


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(404, text="Not Found"),
        httpx.Response(200, text="<html>cPanel login</html>", headers={"content-type": "text/html"}),
        httpx.Response(200, json={"status": 0, "statusmsg": "API 0 answer"}),
        httpx.Response(200, json=[1, 2]),
        httpx.Response(200, json={"metadata": {"version": 1}}),
    ],
)
def test_anything_but_the_envelope_is_a_bad_response(response):
    with pytest.raises(PermanentIntegrationError) as caught:
        classify("listaccts", response)
    assert caught.value.code == "whm_bad_response"


@pytest.mark.parametrize("error", [httpx.ReadTimeout("timed out"), httpx.ConnectTimeout("timed out"), httpx.PoolTimeout("")])
def test_timeouts_are_transient_whm_timeout(error):
    with pytest.raises(TransientIntegrationError) as caught:
        classify("createacct", error)
    assert caught.value.code == "whm_timeout"


@pytest.mark.parametrize(
    "error", [httpx.ConnectError("refused"), httpx.ReadError("reset by peer"), httpx.RemoteProtocolError("closed")]
)
def test_connection_failures_are_transient_unavailable(error):
    with pytest.raises(TransientIntegrationError) as caught:
        classify("createacct", error)
    assert caught.value.code == "whm_unavailable"


def scripted(*responses: httpx.Response) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A transport answering with `responses` in turn, recording each request."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return responses[min(len(seen), len(responses)) - 1]

    return httpx.MockTransport(handler), seen


async def test_read_calls_retry_briefly_on_5xx():
    transport, seen = scripted(httpx.Response(503), httpx.Response(503), envelope(1, data={"pkg": [{"name": "pro"}]}))
    async with WhmClient("http://whm.test:2087", "root", "tok", transport=transport) as whm:
        assert await whm.listpkgs() == [{"name": "pro"}]
    assert len(seen) == 3


async def test_create_and_auth_failures_are_never_retried():
    transport, seen = scripted(httpx.Response(503))
    async with WhmClient("http://whm.test:2087", "root", "tok", transport=transport) as whm:
        with pytest.raises(TransientIntegrationError):
            await whm.createacct(username="alice", domain="a.example", plan="pro", password="x", contactemail="")
    assert len(seen) == 1
    transport, seen = scripted(httpx.Response(403, text="Access denied"))
    async with WhmClient("http://whm.test:2087", "root", "tok", transport=transport) as whm:
        with pytest.raises(WhmAuthError):
            await whm.listaccts()
    assert len(seen) == 1


async def test_request_shape():
    transport, seen = scripted(envelope(1))
    async with WhmClient("http://whm.test:2087/", "reseller", "tok", transport=transport) as whm:
        await whm.removeacct("alice", keepdns=True)
    request = seen[0]
    assert request.method == "GET"
    assert request.url.path == "/json-api/removeacct"
    assert dict(request.url.params) == {"api.version": "1", "username": "alice", "keepdns": "1"}
    assert request.headers["authorization"] == "whm reseller:tok"
