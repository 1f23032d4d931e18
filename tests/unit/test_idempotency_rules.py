"""Idempotency key rules: valid keys, fingerprints, what is stored, what a taken key answers."""

from __future__ import annotations

from domain.idempotency import rules


def test_valid_keys_are_1_to_255_printable_ascii():
    assert rules.valid_key("a") and rules.valid_key("k" * 255) and rules.valid_key("a b~!{}")
    for bad in ("", "k" * 256, "tab\there", "new\nline", "caf\u00e9", "\x7f"):
        assert not rules.valid_key(bad), bad


def test_the_fingerprint_covers_method_target_and_body():
    base = rules.fingerprint("POST", "/v1/customers", b"{}")
    assert base == rules.fingerprint("post", "/v1/customers", b"{}") and len(base) == 64
    assert base != rules.fingerprint("PUT", "/v1/customers", b"{}")
    assert base != rules.fingerprint("POST", "/v1/customers?x=1", b"{}")
    assert base != rules.fingerprint("POST", "/v1/customers", b"{ }")
    # The separator keeps target and body apart.
    assert rules.fingerprint("POST", "/a", b"b") != rules.fingerprint("POST", "/ab", b"")


def test_2xx_and_4xx_are_stored_5xx_and_transient_4xx_are_not():
    assert all(rules.storable(s) for s in (200, 201, 202, 400, 404, 409, 422))
    assert not any(rules.storable(s) for s in (500, 502, 503, 408, 429))


def test_only_safe_headers_are_kept():
    headers = [(b"Content-Type", b"application/json"), (b"location", b"/v1/jobs/1"), (b"set-cookie", b"s=1"),
               (b"x-request-id", b"req_1"), (b"content-length", b"2")]
    assert rules.kept_headers(headers) == [["content-type", "application/json"], ["location", "/v1/jobs/1"]]


def test_a_taken_key_answers_by_fingerprint_then_state():
    assert rules.decide("a", "done", "b") == rules.REUSED
    assert rules.decide("a", "in_flight", "b") == rules.REUSED
    assert rules.decide("a", "done", "a") == rules.REPLAY
    assert rules.decide("a", "in_flight", "a") == rules.IN_FLIGHT
