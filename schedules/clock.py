"""The clock: one leader runs the periodic work: the outbox relay, the re-sending of what a broker lost (its
Redis restarted empty, or messages stalled), and the expiry of idempotency keys."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from datetime import datetime, timezone

from dramatiq.brokers.redis import RedisBroker

import domain.models  # noqa: F401  (every table known, so foreign keys resolve in this process)
from domain.db import make_engine, make_sessionmaker, session_scope
from domain.idempotency.service import delete_expired
from domain.jobs.service import lost_with_broker, mark_relayed, mark_resent, stalled_jobs, undispatched_jobs
from domain.outages import describe
from domain.pg import LazyPool
from domain.redis_pipe import PipelinedRedis
from domain.settings import Settings
from workers.locks import RedisLock
from workers.dispatch import dispatch, make_broker, resting_queues

log = logging.getLogger("hostq.scheduler")
TICK_S = 2.0
LEADER_TTL_MS = 15_000
#: How often the leader deletes idempotency keys past their 24 hours (and once when it starts leading).
EXPIRE_KEYS_EVERY_S = 3600.0
#: How often the stalled-job sweep runs (at most; more often when HOSTQ_RESEND_STALLED_S is shorter).
RESEND_EVERY_S = 60.0
#: Postgres connections: the ORM engine's (kept, and as many more under bursts) and the key sweep's pool.
ORM_POOL, KEYS_POOL = 2, 1
PROCESS_CONNECTIONS = 2 * ORM_POOL + KEYS_POOL


async def _send_found(sessions, broker, find, mark) -> int:
    """Send the jobs `find(session)` locks, and `mark(session, sent)` those that reached the broker, in one
    transaction; how many were sent."""
    async with session_scope(sessions) as session:
        jobs = await find(session)
        sent = dispatch(broker, jobs) if jobs else []
        if sent:
            await mark(session, sent)
    return len(sent)


async def relay_once(sessions, broker, grace_s: float) -> int:
    """Re-send every job recorded but never dispatched; return how many reached the broker."""
    sent = await _send_found(sessions, broker, lambda session: undispatched_jobs(
        session, grace_s, skip_queues=resting_queues(broker)), mark_relayed)
    if sent:
        log.info("relay re-sent %d job(s)", sent)
    return sent


async def resend_stalled(sessions, broker, after_s: float, running_after_s: float | None = None) -> int:
    """Send again every job whose delivery is more than `after_s` overdue, or still `running` after
    `running_after_s` (domain/jobs/service.py stalled_jobs); return how many reached the broker."""
    sent = await _send_found(sessions, broker, lambda session: stalled_jobs(
        session, after_s, running_after_s, skip_queues=resting_queues(broker)), mark_resent)
    if sent:
        log.warning("re-sent %d job(s) waiting more than %.0f s for their delivery, or running for longer than an "
                    "attempt can (a lost message, or a backlog)", sent, after_s)
    return sent


def broker_lost_its_data(broker, marker: str) -> bool:
    """Whether the broker's Redis has lost the marker key kept there (restarted without its data, or flushed),
    and with it the messages it held. True too on a Redis that never had one (a first start: re-sending then only
    duplicates messages, which is harmless). Always False for RabbitMQ, whose queues are durable."""
    if not isinstance(broker, RedisBroker):
        return False
    return not broker.client.exists(marker)


async def resend_lost(sessions, broker, before: datetime) -> int | None:
    """Send again every job whose message a broker that lost its data at `before` held; how many, or None when
    some could not be sent (the broker refused, or rests after a refusal: workers/dispatch.py)."""
    total = 0
    while True:
        async with session_scope(sessions) as session:
            jobs = await lost_with_broker(session, before, skip_queues=resting_queues(broker))
            sent = dispatch(broker, jobs) if jobs else []
            if sent:
                await mark_resent(session, sent)
        total += len(sent)
        if len(sent) < len(jobs) and not sent:
            log.warning("the broker's Redis had lost its data: re-sent %d queued or retrying job(s) so far, the "
                        "rest at the next tick", total)
            return None
        if not jobs:
            break
    if resting := resting_queues(broker):  # their jobs were left out: not done until they are sent too
        async with session_scope(sessions) as session:
            if await lost_with_broker(session, before, limit=1, only_queues=resting):
                log.warning("the broker's Redis had lost its data: re-sent %d queued or retrying job(s); those of "
                            "%s, whose sends rest, at a later tick", total, ", ".join(resting))
                return None
    (log.warning if total else log.info)("the broker's Redis had lost its data (or is new): re-sent %d queued or "
                                         "retrying job(s)", total)
    return total


async def resend_if_lost(sessions, broker, marker: str, lost_at: datetime | None) -> datetime | None:
    """One tick's look at the broker's data: when its marker is gone, send again what the broker held, and write
    the marker back only once all of it is sent (a tick that fails or stops halfway leaves it missing, so the next
    one looks again). `lost_at`: when an unfinished resend found the loss. Returns it while something remains to
    send, else None."""
    if lost_at is None:
        if not broker_lost_its_data(broker, marker):
            return None
        lost_at = datetime.now(timezone.utc)
    if await resend_lost(sessions, broker, lost_at) is None:
        return lost_at
    broker.client.set(marker, str(int(time.time())))
    return None


async def expire_keys_once(pool: LazyPool) -> int:
    """Delete the idempotency keys of every tenant created more than 24 h ago; return how many."""
    async with (await pool.get()).acquire() as conn:
        deleted = await delete_expired(conn)
    if deleted:
        log.info("deleted %d expired idempotency key(s)", deleted)
    return deleted


def _said_leading(leads: bool, was: bool | None) -> bool:
    """Whether this scheduler leads now; a line when that changes (or is first known)."""
    if leads and not was:
        log.info("leading: this scheduler runs the clock")
    elif not leads and was:
        log.warning("no longer leading: another scheduler took the clock's lock (this one looked stopped for "
                    "%d s?)", LEADER_TTL_MS // 1000)
    elif not leads and was is None:
        log.info("another scheduler leads: this one takes over if it stops (within %d s)", LEADER_TTL_MS // 1000)
    return leads


def _stopper() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def run(settings: Settings, *, leader: bool = True) -> None:
    """Tick until SIGTERM; only the leader acts (with `leader=False`, as `hostq relay`, act without a lock)."""
    engine = make_engine(settings.database_url, pool_size=ORM_POOL)
    sessions, broker = make_sessionmaker(engine), make_broker(settings)
    keys_pool, expire_at, resend_at = LazyPool(settings.database_url, max_size=KEYS_POOL, scope="system"), 0.0, 0.0
    client = PipelinedRedis(settings.redis_url, timeout_s=5)
    lock = RedisLock(client, f"{settings.namespace}:scheduler:leader", LEADER_TTL_MS)
    marker = f"{settings.namespace}:dramatiq:__marker__"  # with the broker's keys: a flush of them takes it too
    lost_at: datetime | None = None  # when the broker's loss of its data was found, until all is sent again
    stop = _stopper()
    leading: bool | None = None  # unknown until the lock first answers
    try:
        while not stop.is_set():
            try:
                if leader:
                    leading = _said_leading(await lock.acquire(), leading)
                if not leader or leading:
                    lost_at = await resend_if_lost(sessions, broker, marker, lost_at)
                    await relay_once(sessions, broker, settings.relay_grace_s)
                    if time.monotonic() >= resend_at:
                        await resend_stalled(sessions, broker, settings.resend_stalled_s,
                                             max(settings.resend_stalled_s, settings.attempt_time_limit_s))
                        resend_at = time.monotonic() + min(RESEND_EVERY_S, settings.resend_stalled_s)
                    if leader and time.monotonic() >= expire_at:
                        await expire_keys_once(keys_pool)
                        expire_at = time.monotonic() + EXPIRE_KEYS_EVERY_S
            except Exception as exc:  # a dependency is down: say so and keep ticking
                log.warning("scheduler tick failed: %s", describe(exc))
            try:
                await asyncio.wait_for(stop.wait(), TICK_S)
            except asyncio.TimeoutError:
                pass
    finally:
        if leader:
            try:
                await lock.release()
            except Exception:  # Redis gone: the TTL frees the lock
                pass
        await client.aclose()
        await keys_pool.close()
        await engine.dispose()
        broker.close()
