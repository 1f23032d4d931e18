"""Claiming, completing, releasing and expiring idempotency keys, in plain SQL on an asyncpg connection.

Each call is one statement, run on the caller's connection (in its transaction, if it has one): these run on
every keyed POST, so they skip the ORM (see domain/pg.py). Row-level security applies as to any query: the
connection must act for the tenant.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import msgspec

from domain.ids import new_id
from domain.pg import Row, literal_bytes, literal_text, literal_uuid

RETENTION = timedelta(hours=24)
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

_CLAIM = """
INSERT INTO idempotency_keys (id, tenant_id, key, fingerprint, state, created_at, locked_until)
VALUES ($1, $2, $3, $4, 'in_flight', now(), now() + $5::interval)
ON CONFLICT (tenant_id, key) DO NOTHING RETURNING id"""
_FIND = """
SELECT fingerprint, state, response_status, response_headers, response_body,
       state = 'in_flight' AND now() > locked_until AS stale
FROM idempotency_keys WHERE tenant_id = $1 AND key = $2"""
_COMPLETE = """
UPDATE idempotency_keys SET state = 'done', response_status = $2, response_headers = $3::jsonb,
       response_body = $4, completed_at = now()
WHERE id = $1 AND state = 'in_flight'"""
_RELEASE = "DELETE FROM idempotency_keys WHERE id = $1 AND state = 'in_flight' AND committed_at IS NULL"
_TAKE_OVER = """
DELETE FROM idempotency_keys
WHERE tenant_id = $1 AND key = $2 AND state = 'in_flight' AND committed_at IS NULL AND now() > locked_until"""
_DELETE_EXPIRED = "DELETE FROM idempotency_keys WHERE created_at < now() - $1::interval"


def _changed(status: str) -> int:
    """Rows touched, from a command tag such as 'UPDATE 1'."""
    return int(status.rsplit(" ", 1)[-1])


async def claim(conn: Any, tenant_id: uuid.UUID, key: str, fingerprint: str, *,
                lock_timeout: timedelta) -> uuid.UUID | None:
    """Take the key for this request: its row id, or None when the tenant already holds that key.

    INSERT .. ON CONFLICT DO NOTHING: of concurrent claimants exactly one gets the row; the others wait on
    the unique index until the winner's (one-statement) transaction commits, then get nothing.
    """
    return await conn.fetchval(_CLAIM, new_id(), tenant_id, key, fingerprint, lock_timeout)


async def find(conn: Any, tenant_id: uuid.UUID, key: str) -> tuple[Any, bool] | None:
    """The tenant's row for this key (fingerprint, state, response_*) and whether it is stale (in flight past
    its lock), or None."""
    record = await conn.fetchrow(_FIND, tenant_id, key)
    return (Row(record), bool(record["stale"])) if record is not None else None


async def complete(conn: Any, claim_id: uuid.UUID, *, status: int, headers: list[list[str]], body: bytes) -> bool:
    """Store the response of the claim's request; False when the row is gone or no longer in flight."""
    return _changed(await conn.execute(_COMPLETE, claim_id, status, headers, body)) == 1


#: How long a claim in a transaction waits for another request holding the same key before answering 409.
CLAIM_WAIT_MS = 100


def claim_in_transaction_sql(claim_id: uuid.UUID, tenant_id: uuid.UUID, key: str, fingerprint: str, *,
                             lock_timeout: timedelta) -> str:
    """SQL (literals only) that claims the key inside the request's own transaction (domain.pg.begin's `then`).

    The row is born committed: it becomes visible only if the transaction commits, with the effect and the
    stored answer (complete_sql). A key already taken makes it fail with unique_violation; a key held by a
    transaction still running, with lock_not_available after CLAIM_WAIT_MS.
    """
    if not _SHA256_HEX.fullmatch(fingerprint):
        raise ValueError("fingerprint must be a sha256 hex digest")
    # hostq_claim_key (migration 0006): a function, so Postgres plans its INSERT once per connection.
    return (f"SELECT hostq_claim_key('{literal_uuid(claim_id)}', '{literal_uuid(tenant_id)}', {literal_text(key)}, "
            f"'{fingerprint}', {int(lock_timeout.total_seconds())}, {CLAIM_WAIT_MS})")


def complete_sql(claim_id: uuid.UUID, *, status: int, headers: list[list[str]], body: bytes) -> str:
    """SQL (literals only) storing the answer of a claim made in the same transaction (domain.pg.commit's
    `before`)."""
    return (f"SELECT hostq_store_answer('{literal_uuid(claim_id)}', {int(status)}, "
            f"{literal_text(msgspec.json.encode(headers).decode())}::jsonb, {literal_bytes(body)})")


def commit_claim_sql(claim_id: uuid.UUID) -> str:
    """The statement that ends a keyed request's business transaction (domain.pg.transaction's `finish`).

    It marks the claim committed, or raises SQLSTATE CLAIM_LOST (so nothing commits) when the claim is no
    longer ours: taken over after its lock ran out. Migration 0005 defines the function.
    """
    return f"SELECT hostq_commit_idempotency_claim('{literal_uuid(claim_id)}')"


#: The SQLSTATE of hostq_commit_idempotency_claim when the claim was taken over.
CLAIM_LOST = "HQ409"


async def release(conn: Any, claim_id: uuid.UUID) -> None:
    """Give the key back (5xx or exception) unless the request's effect already committed."""
    await conn.execute(_RELEASE, claim_id)


async def take_over_abandoned(conn: Any, tenant_id: uuid.UUID, key: str) -> bool:
    """Drop a claim whose lock ran out and whose request never committed (its process died): True if dropped."""
    return _changed(await conn.execute(_TAKE_OVER, tenant_id, key)) == 1


async def delete_expired(conn: Any, older_than: timedelta = RETENTION) -> int:
    """Delete keys created more than `older_than` ago (at least 24 h: the API promises that); how many."""
    if older_than < RETENTION:
        raise ValueError("idempotency keys are kept at least 24 hours")
    return _changed(await conn.execute(_DELETE_EXPIRED, older_than))
