"""Secrets at rest: AES-256-GCM under the key-encryption key (HOSTQ_KEK)."""

from __future__ import annotations

import hashlib
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = b"\x01"


def seal(kek: bytes, plaintext: str, *, context: bytes = b"") -> bytes:
    """Encrypt `plaintext`; `context` is bound as associated data (what the secret belongs to)."""
    nonce = os.urandom(12)
    return _VERSION + nonce + AESGCM(kek).encrypt(nonce, plaintext.encode(), context)


def unseal(kek: bytes, blob: bytes, *, context: bytes = b"") -> str:
    """Decrypt what `seal` produced; raises cryptography's InvalidTag on a wrong key or context."""
    if blob[:1] != _VERSION:
        raise ValueError("unknown sealed-secret version")
    nonce, ciphertext = blob[1:13], blob[13:]
    return AESGCM(kek).decrypt(nonce, ciphertext, context).decode()


def hash_api_key(api_key: str) -> str:
    """SHA-256 of a high-entropy API key: enough to find it, useless to an attacker who reads it."""
    return hashlib.sha256(api_key.encode()).hexdigest()
