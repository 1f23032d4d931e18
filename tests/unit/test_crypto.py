"""Secrets at rest under the key-encryption key."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.exceptions import InvalidTag

from domain.crypto import hash_api_key, seal, unseal

KEK = bytes(range(32))
OTHER_KEK = bytes(range(1, 33))


def test_round_trip():
    blob = seal(KEK, "signing-secret-ção", context=b"tenant:1")
    assert unseal(KEK, blob, context=b"tenant:1") == "signing-secret-ção"
    assert b"signing-secret" not in blob


def test_round_trip_without_context():
    assert unseal(KEK, seal(KEK, "x")) == "x"


def test_wrong_key_fails():
    blob = seal(KEK, "secret", context=b"tenant:1")
    with pytest.raises(InvalidTag):
        unseal(OTHER_KEK, blob, context=b"tenant:1")


def test_wrong_context_fails():
    blob = seal(KEK, "secret", context=b"tenant:1")
    with pytest.raises(InvalidTag):
        unseal(KEK, blob, context=b"tenant:2")
    with pytest.raises(InvalidTag):
        unseal(KEK, blob)


def test_tampered_ciphertext_fails():
    blob = bytearray(seal(KEK, "secret"))
    blob[-1] ^= 1
    with pytest.raises(InvalidTag):
        unseal(KEK, bytes(blob))


def test_unknown_version_refused():
    blob = seal(KEK, "secret")
    with pytest.raises(ValueError, match="version"):
        unseal(KEK, b"\x02" + blob[1:])


def test_two_seals_differ():
    a, b = seal(KEK, "same"), seal(KEK, "same")
    assert a != b and a[1:13] != b[1:13]  # fresh nonce each time
    assert unseal(KEK, a) == unseal(KEK, b) == "same"


def test_hash_api_key_is_hex_sha256():
    digest = hash_api_key("hq_live_abc123")
    assert digest == hashlib.sha256(b"hq_live_abc123").hexdigest()
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert hash_api_key("hq_live_abc124") != digest
