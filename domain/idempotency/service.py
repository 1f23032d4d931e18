"""Claiming, completing, releasing and expiring idempotency keys. Each call runs in the caller's transaction."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from domain.ids import new_id
from domain.idempotency.models import DONE, IN_FLIGHT, IdempotencyKey

RETENTION = timedelta(hours=24)


async def claim(session: AsyncSession, tenant_id: uuid.UUID, key: str, fingerprint: str, *,
                lock_timeout: timedelta) -> uuid.UUID | None:
    """Take the key for this request: its row id, or None when the tenant already holds that key.

    INSERT .. ON CONFLICT DO NOTHING: of concurrent claimants exactly one gets the row; the others wait on
    the unique index until the winner's (short) transaction commits, then get nothing.
    """
    stmt = (insert(IdempotencyKey)
            .values(id=new_id(), tenant_id=tenant_id, key=key, fingerprint=fingerprint, state=IN_FLIGHT,
                    created_at=func.now(), locked_until=func.now() + lock_timeout)
            .on_conflict_do_nothing(index_elements=["tenant_id", "key"])
            .returning(IdempotencyKey.id))
    return await session.scalar(stmt)


async def find(session: AsyncSession, tenant_id: uuid.UUID, key: str) -> tuple[IdempotencyKey, bool] | None:
    """The tenant's row for this key and whether it is stale (in flight past its lock), or None."""
    stale = (IdempotencyKey.state == IN_FLIGHT) & (func.now() > IdempotencyKey.locked_until)
    found = (await session.execute(select(IdempotencyKey, stale)
                                   .where(IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.key == key))).first()
    return (found[0], bool(found[1])) if found else None


async def complete(session: AsyncSession, claim_id: uuid.UUID, *, status: int, headers: list[list[str]],
                   body: bytes) -> bool:
    """Store the response of the claim's request; False when the row is gone or no longer in flight."""
    result = await session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.id == claim_id, IdempotencyKey.state == IN_FLIGHT)
        .values(state=DONE, response_status=status, response_headers=headers, response_body=body,
                completed_at=func.now()))
    return result.rowcount == 1


async def mark_committed(session: AsyncSession, claim_id: uuid.UUID) -> bool:
    """In the request's business transaction: record that its effect commits with it.

    False when the claim is no longer ours (taken over after its lock ran out): the caller must then
    roll its transaction back, so the effect never happens twice.
    """
    result = await session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.id == claim_id, IdempotencyKey.state == IN_FLIGHT, IdempotencyKey.committed_at.is_(None))
        .values(committed_at=func.now()))
    return result.rowcount == 1


async def release(session: AsyncSession, claim_id: uuid.UUID) -> None:
    """Give the key back (5xx or exception) unless the request's effect already committed."""
    await session.execute(delete(IdempotencyKey).where(IdempotencyKey.id == claim_id,
                                                       IdempotencyKey.state == IN_FLIGHT,
                                                       IdempotencyKey.committed_at.is_(None)))


async def take_over_abandoned(session: AsyncSession, tenant_id: uuid.UUID, key: str) -> bool:
    """Drop a claim whose lock ran out and whose request never committed (its process died): True if dropped."""
    result = await session.execute(
        delete(IdempotencyKey).where(IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.key == key,
                                     IdempotencyKey.state == IN_FLIGHT, IdempotencyKey.committed_at.is_(None),
                                     func.now() > IdempotencyKey.locked_until))
    return result.rowcount == 1


async def delete_expired(session: AsyncSession, older_than: timedelta = RETENTION) -> int:
    """Delete keys created more than `older_than` ago (at least 24 h: the API promises that); how many."""
    if older_than < RETENTION:
        raise ValueError("idempotency keys are kept at least 24 hours")
    result = await session.execute(delete(IdempotencyKey)
                                   .where(IdempotencyKey.created_at < func.now() - older_than))
    return result.rowcount
