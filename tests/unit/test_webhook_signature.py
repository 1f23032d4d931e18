"""The built-in webhook signature (Stripe's scheme) of integrations.md."""

from __future__ import annotations

import hashlib
import hmac

from domain.payments.webhook_signature import signature_header, verify

BODY = b'{"pix":[{"endToEndId":"E1","txid":"t","valor":"69.90"}]}'


def test_the_header_is_t_and_v1_of_hmac_sha256_over_timestamp_dot_body():
    header = signature_header(["whsec"], 1_790_000_000, BODY)
    expected = hmac.new(b"whsec", b"1790000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1790000000,v1={expected}"


def test_any_matching_v1_is_enough_so_a_secret_can_rotate():
    header = signature_header(["old", "new"], 1_790_000_000, BODY)
    assert header.count("v1=") == 2
    assert verify(["new"], header, BODY, now=1_790_000_010)
    assert verify(["old"], header, BODY, now=1_790_000_010)
    assert not verify(["other"], header, BODY, now=1_790_000_010)


def test_a_changed_body_a_stale_or_missing_timestamp_is_refused():
    header = signature_header(["s"], 1_790_000_000, BODY)
    assert not verify(["s"], header, BODY + b" ", now=1_790_000_000)
    assert verify(["s"], header, BODY, now=1_790_000_300)
    assert not verify(["s"], header, BODY, now=1_790_000_301)
    assert not verify(["s"], header.split(",", 1)[1], BODY, now=1_790_000_000)  # no t=
    assert not verify(["s"], "t=1790000000", BODY, now=1_790_000_000)  # no v1=
    assert not verify(["s"], "garbage", BODY, now=1_790_000_000)


def test_a_v1_value_that_is_not_ascii_is_refused_not_an_error():
    now = 1_700_000_000
    assert verify(["whsec"], f"t={now},v1=\xe9", BODY, now) is False
    assert verify(["whsec"], f"t={now},v1=\xe9,{signature_header(['whsec'], now, BODY).partition(',')[2]}", BODY, now)
