"""The request signature of api-v1.md and the client that produces it."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import httpx
import pytest

from domain.tenants import signing
from hostq.client import HostqSigner

SECRET = "s3cret-signing-key"
TS = "1700000000"
PATH = "/v1/customers?limit=5&status=active"
BODY = b'{"name":"Ana"}'


def independent_signature(secret: str, payload: str | bytes) -> str:
    """HMAC-SHA256 computed here, not with the module under test."""
    data = payload.encode() if isinstance(payload, str) else payload
    return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def test_signed_payload_is_timestamp_method_target_body_joined_by_dots():
    payload = signing.signed_payload(TS, "post", PATH, BODY)
    assert payload == b'1700000000.POST./v1/customers?limit=5&status=active.{"name":"Ana"}'


def test_signed_payload_with_empty_body_ends_with_a_dot():
    assert signing.signed_payload(TS, "GET", "/v1/jobs", b"") == b"1700000000.GET./v1/jobs."


def test_signature_computed_independently_verifies():
    expected = independent_signature(SECRET, f"{TS}.POST.{PATH}.".encode() + BODY)
    assert signing.sign(SECRET, signing.signed_payload(TS, "POST", PATH, BODY)) == expected
    header = f"v1={expected}"
    assert signing.signature_header(SECRET, TS, "POST", PATH, BODY) == header
    assert signing.signature_valid([SECRET], header, signing.signed_payload(TS, "POST", PATH, BODY))


@pytest.mark.parametrize("secret, method, path, body", [
    ("another-secret", "POST", PATH, BODY),
    (SECRET, "POST", PATH, b'{"name":"Bob"}'),
    (SECRET, "POST", "/v1/customers?limit=6&status=active", BODY),
    (SECRET, "POST", "/v1/customers", BODY),
    (SECRET, "PUT", PATH, BODY),
    (SECRET, "POST", PATH, BODY + b" "),
], ids=["wrong-secret", "altered-body", "altered-query", "dropped-query", "altered-method", "trailing-space"])
def test_any_change_to_a_signed_part_fails(secret, method, path, body):
    header = "v1=" + independent_signature(SECRET, f"{TS}.POST.{PATH}.".encode() + BODY)
    assert not signing.signature_valid([secret], header, signing.signed_payload(TS, method, path, body))


def test_altered_timestamp_fails():
    header = signing.signature_header(SECRET, TS, "POST", PATH, BODY)
    assert not signing.signature_valid([SECRET], header, signing.signed_payload("1700000001", "POST", PATH, BODY))


def test_one_valid_value_among_several_passes():
    payload = signing.signed_payload(TS, "GET", PATH, b"")
    good = independent_signature(SECRET, payload)
    header = f"v1={'0' * 64}, v1={good},v1=deadbeef"
    assert signing.candidate_signatures(header) == ["0" * 64, good, "deadbeef"]
    assert signing.signature_valid([SECRET], header, payload)


def test_rotation_old_or_new_secret_accepted():
    payload = signing.signed_payload(TS, "GET", PATH, b"")
    header = "v1=" + independent_signature("old-secret", payload)
    assert signing.signature_valid(["new-secret", "old-secret"], header, payload)
    assert not signing.signature_valid(["new-secret"], header, payload)


def test_several_values_none_valid_fails():
    payload = signing.signed_payload(TS, "GET", PATH, b"")
    header = "v1=" + independent_signature("x", payload) + ",v1=" + independent_signature("y", payload)
    assert not signing.signature_valid([SECRET], header, payload)


@pytest.mark.parametrize("header_template", [
    "{sig}",          # the hex alone, no scheme
    "v0={sig}",
    "V1={sig}",
    "sha256={sig}",
    "v1=",
    "",
], ids=["bare", "v0", "upper-V1", "sha256", "empty-v1", "empty"])
def test_header_without_a_v1_value_fails(header_template):
    payload = signing.signed_payload(TS, "GET", PATH, b"")
    header = header_template.format(sig=independent_signature(SECRET, payload))
    assert signing.candidate_signatures(header) == []
    assert not signing.signature_valid([SECRET], header, payload)


def test_no_secrets_never_valid():
    payload = signing.signed_payload(TS, "GET", PATH, b"")
    assert not signing.signature_valid([], "v1=" + independent_signature(SECRET, payload), payload)


@pytest.mark.parametrize("offset, fresh", [(0, True), (300, True), (-300, True), (301, False), (-301, False)])
@pytest.mark.parametrize("fraction", [0.0, 0.999])  # the server's clock between two whole seconds
def test_timestamp_freshness_boundary(offset, fresh, fraction):
    now = 1_700_000_000
    assert signing.timestamp_fresh(str(now + offset), now + fraction) is fresh


@pytest.mark.parametrize("value", ["", "-5", "-1700000000", "17e8", "1700000000.5", " 1700000000", "abc",
                                   "١٧٠٠٠٠٠٠٠٠", "0x6553f100", "1" * 13])
def test_timestamp_that_is_not_whole_ascii_seconds_is_not_fresh(value):
    assert signing.timestamp_fresh(value, 1_700_000_000.0) is False


def test_hostq_signer_headers_verify_like_the_server_would():
    body = {"name": "Ana", "email": "ana@example.com"}
    request = httpx.Request("POST", "http://x/v1/customers?limit=5", json=body)
    signer = HostqSigner("hq_key_123", SECRET)
    before = int(time.time())
    signed = next(signer.auth_flow(request))
    after = int(time.time())

    assert signed.headers["Authorization"] == "Bearer hq_key_123"
    ts = signed.headers["X-Timestamp"]
    assert ts.isdigit() and before <= int(ts) <= after
    assert signing.timestamp_fresh(ts, time.time())

    raw_target = "/v1/customers?limit=5"
    assert json.loads(signed.content) == body
    payload = signing.signed_payload(ts, "POST", raw_target, signed.content)
    assert signing.signature_valid([SECRET], signed.headers["X-Signature"], payload)
    assert signed.headers["X-Signature"] == "v1=" + independent_signature(
        SECRET, f"{ts}.POST.{raw_target}.".encode() + signed.content)
    # The query is part of what is signed: the same headers do not verify for the bare path.
    assert not signing.signature_valid([SECRET], signed.headers["X-Signature"],
                                       signing.signed_payload(ts, "POST", "/v1/customers", signed.content))


def test_hostq_signer_signs_the_percent_encoded_target_as_sent():
    request = httpx.Request("GET", "http://x/v1/customers", params={"q": "josé silva"})
    signed = next(HostqSigner("k", SECRET).auth_flow(request))
    ts = signed.headers["X-Timestamp"]
    target = signed.url.raw_path.decode("ascii")
    assert target.startswith("/v1/customers?q=jos%C3%A9")
    payload = signing.signed_payload(ts, "GET", target, b"")
    assert signing.signature_valid([SECRET], signed.headers["X-Signature"], payload)
    assert not signing.signature_valid([SECRET], signed.headers["X-Signature"],
                                       signing.signed_payload(ts, "GET", "/v1/customers?q=josé silva", b""))


def test_a_value_that_is_not_ascii_is_no_match_not_an_error():
    """compare_digest raises on non-ASCII text; a header is decoded as latin-1, so anyone could send one."""
    payload = signing.signed_payload("1700000000", "GET", "/v1/customers", b"")
    good = signing.sign("hqs_secret", payload)
    assert not signing.signature_valid(["hqs_secret"], "v1=\xe9", payload)
    assert signing.signature_valid(["hqs_secret"], f"v1=\xe9,v1={good}", payload)
