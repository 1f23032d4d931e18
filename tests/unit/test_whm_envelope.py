"""How the WHM client reads answers and failures: one classification, no network."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from http import HTTPStatus

import pytest

from domain.errors import IntegrationError, PermanentIntegrationError, TransientIntegrationError
from workers.integrations.http1 import ConnectionLost, ProtocolError
from workers.integrations.whm import (
    WhmAccountExists,
    WhmAuthError,
    WhmNoSuchAccount,
    WhmRejected,
    classify,
    classify_failure,
)

Answer = tuple[int, str, str, bytes]


def answer(status: int, body: str | bytes = b"", content_type: str = "text/plain") -> Answer:
    """What classify gets for one HTTP answer."""
    return status, HTTPStatus(status).phrase, content_type, body.encode() if isinstance(body, str) else body


def as_json(value: object, status: int = 200) -> Answer:
    return answer(status, json.dumps(value), "application/json")


def envelope(result: int | str, reason: str = "OK", data: dict | None = None) -> Answer:
    metadata = {"version": 1, "result": result, "reason": reason, "command": "createacct", "output": {"raw": ""}}
    return as_json({"metadata": metadata, "data": data or {}})


@pytest.mark.parametrize("result", [1, "1"])
def test_success_returns_the_envelope(result):
    assert classify("createacct", *envelope(result, data={"ip": "192.0.2.1"}))["data"] == {"ip": "192.0.2.1"}


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
        classify("createacct", *envelope(0, reason))
    assert caught.value.code == "whm_account_exists"
    assert caught.value.message == reason
    assert not caught.value.retryable


@pytest.mark.parametrize("reason", ["Account does not exist.", 'Failed to find the account "ghost".'])
def test_missing_account_is_recognised(reason):
    with pytest.raises(WhmNoSuchAccount) as caught:
        classify("accountsummary", *envelope(0, reason))
    assert caught.value.code == "whm_rejected"


@pytest.mark.parametrize("reason", ["Unable to find package “gold”.", "“bad_domain” is not a valid domain.",
                                    'You do not have permission to assign the package "root_gold".',
                                    "You are not authorized to modify the account “bob”."])
def test_other_result_0_is_rejected_and_permanent(reason):
    with pytest.raises(WhmRejected) as caught:
        classify("createacct", *envelope(0, reason))
    assert type(caught.value) is WhmRejected
    assert (caught.value.code, caught.value.message) == ("whm_rejected", f"createacct: {reason}")


@pytest.mark.parametrize(
    "response",
    [
        answer(401, "Access denied"),
        answer(403, "<html>Access denied</html>", "text/html"),
        envelope(0, "Access denied"),
        envelope(0, "Invalid API token."),
    ],
)
def test_auth_failures_are_permanent(response):
    with pytest.raises(WhmAuthError) as caught:
        classify("listpkgs", *response)
    assert caught.value.code == "whm_auth_failed"
    assert isinstance(caught.value, PermanentIntegrationError)


@pytest.mark.parametrize("status", [500, 502, 503, 429, 408])
def test_5xx_408_and_429_are_transient_unavailable(status):
    with pytest.raises(TransientIntegrationError) as caught:
        classify("createacct", *answer(status, "down"))
    assert caught.value.code == "whm_unavailable"
    assert caught.value.message == f"createacct: HTTP {status} {HTTPStatus(status).phrase}"


@pytest.mark.parametrize(
    "response",
    [
        answer(404, "Not Found"),
        answer(301, "", "text/html"),  # redirects are not followed
        answer(200, "<html>cPanel login</html>", "text/html"),
        answer(200, "", ""),
        as_json({"status": 0, "statusmsg": "API 0 answer"}),
        as_json([1, 2]),
        as_json({"metadata": {"version": 1}}),
    ],
)
def test_anything_but_the_envelope_is_a_bad_response(response):
    with pytest.raises(PermanentIntegrationError) as caught:
        classify("listaccts", *response)
    assert caught.value.code == "whm_bad_response"


def test_a_bad_response_names_status_and_content_type():
    with pytest.raises(PermanentIntegrationError) as caught:
        classify("listaccts", *answer(200, "<html>cPanel login</html>", "text/html"))
    assert caught.value.message == "listaccts: not a WHM API 1 envelope (HTTP 200 OK, text/html)"
    with pytest.raises(PermanentIntegrationError) as caught:
        classify("listaccts", *answer(200, "", ""))
    assert caught.value.message.endswith("(HTTP 200 OK, no content type)")


def cert_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    """What connecting to a server with a certificate we do not trust raises."""
    error = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message}")
    error.reason, error.verify_code, error.verify_message = "CERTIFICATE_VERIFY_FAILED", code, message
    return error


TIMEOUTS = [
    TimeoutError(),  # the call's deadline or the connect timeout
    asyncio.TimeoutError(),
]
CONNECTION_FAILURES = [
    ConnectionRefusedError(111, "Connection refused"),
    ConnectionResetError(104, "Connection reset by peer"),
    socket.gaierror(-2, "Name or service not known"),
    ConnectionLost("connection closed before the response was complete"),
    ConnectionLost("Connection reset by peer"),
    ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"),
]
OTHER_FAILURES = [ProtocolError("malformed response: Invalid constant string")]
UNTRUSTED = [cert_error(18, "self-signed certificate"),
             cert_error(62, "Hostname mismatch, certificate is not valid for 'whm.test'.")]


@pytest.mark.parametrize("error", TIMEOUTS)
def test_timeouts_are_transient_whm_timeout(error):
    with pytest.raises(TransientIntegrationError) as caught:
        classify_failure("createacct", error)
    assert caught.value.code == "whm_timeout"
    assert caught.value.message == f"createacct: {type(error).__name__}, WHM may still finish it"


def test_a_read_that_timed_out_does_not_say_whm_may_finish_it():
    with pytest.raises(TransientIntegrationError) as caught:
        classify_failure("accountsummary", TimeoutError())
    assert (caught.value.code, caught.value.message) == ("whm_timeout", "accountsummary: TimeoutError")


@pytest.mark.parametrize("error", CONNECTION_FAILURES)
def test_connection_failures_are_transient_unavailable(error):
    with pytest.raises(TransientIntegrationError) as caught:
        classify_failure("createacct", error)
    assert caught.value.code == "whm_unavailable"
    assert caught.value.message.startswith(f"createacct: {type(error).__name__}")


def test_os_errors_keep_their_text():
    with pytest.raises(TransientIntegrationError) as caught:
        classify_failure("listpkgs", ConnectionRefusedError(111, "Connection refused"))
    assert caught.value.message == "listpkgs: ConnectionRefusedError: Connection refused"
    with pytest.raises(TransientIntegrationError) as caught:
        classify_failure("listpkgs", ConnectionLost("Connection reset by peer"))
    assert caught.value.message == "listpkgs: ConnectionLost: Connection reset by peer"


def test_an_answer_that_is_not_http_is_a_bad_response():
    with pytest.raises(PermanentIntegrationError) as caught:
        classify_failure("passwd", ProtocolError("malformed response: Invalid constant string"))
    assert caught.value.code == "whm_bad_response"
    assert caught.value.message == "passwd: ProtocolError: malformed response: Invalid constant string"


def test_an_untrusted_certificate_is_permanent_and_names_no_host():
    with pytest.raises(PermanentIntegrationError) as caught:
        classify_failure("listpkgs", UNTRUSTED[0])
    assert (caught.value.code, caught.value.message) == (
        "whm_tls_untrusted", "listpkgs: SSLCertVerificationError: self-signed certificate")
    with pytest.raises(PermanentIntegrationError) as caught:
        classify_failure("listpkgs", UNTRUSTED[1])
    assert caught.value.message == "listpkgs: SSLCertVerificationError: certificate is for another host"


@pytest.mark.parametrize("error", TIMEOUTS + CONNECTION_FAILURES + OTHER_FAILURES + UNTRUSTED)
def test_failure_messages_never_carry_the_url(error):
    with pytest.raises(IntegrationError) as caught:
        classify_failure("passwd", error)
    for part in ("whm.test", "hunter2", "json-api", "password"):
        assert part not in str(caught.value)
