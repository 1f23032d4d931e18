"""Service locks on real Redis: renewed while held, released only by their holder, taken from dead holders."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from domain.redis_pipe import PipelinedRedis
from workers.heartbeat import WorkerHeartbeat
from workers.locks import LockKeeper, RedisLock


@pytest.fixture
async def redis(settings):
    client = PipelinedRedis(settings.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def key(settings) -> str:
    return f"{settings.namespace}:test-lock:{uuid.uuid4()}"


async def test_the_keeper_renews_a_held_lock_past_its_ttl_then_lets_go(redis, key):
    lock, keeper = RedisLock(redis, key, ttl_ms=300), LockKeeper(every_s=0.1)
    assert await lock.acquire_new()
    keeper.hold(lock)
    await asyncio.sleep(0.7)  # more than twice the TTL
    assert await redis.call("GET", key) == lock.token.encode()
    keeper.let_go(lock)
    await keeper.drain()
    assert await redis.call("GET", key) is None


async def test_the_keeper_says_so_when_a_held_lock_was_taken_over(redis, key, caplog):
    """A holder that looked dead lost its lock: its attempt goes on, so the log must say another may act too."""
    lock, keeper = RedisLock(redis, key, ttl_ms=5000), LockKeeper(every_s=0.05)
    assert await lock.acquire_new()
    keeper.hold(lock)
    await redis.call("SET", key, "someone-else|token", "PX", 5000)  # taken over
    await asyncio.sleep(0.2)
    keeper.let_go(lock)
    await keeper.drain()
    assert f"lock {key} is no longer held by this attempt" in caplog.text
    assert await redis.call("GET", key) == b"someone-else|token"  # and its release left the new holder's alone
    await redis.call("DEL", key)


async def test_letting_go_never_frees_another_holders_lock(redis, key):
    first, keeper = RedisLock(redis, key, ttl_ms=100), LockKeeper(every_s=10)
    assert await first.acquire_new()
    await asyncio.sleep(0.15)  # first's hold lapsed (not renewed) and another worker took the lock
    second = RedisLock(redis, key, ttl_ms=5000)
    assert await second.acquire_new()
    keeper.let_go(first)
    await keeper.drain()
    assert await redis.call("GET", key) == second.token.encode()
    assert not await first.renew()


async def test_a_lock_is_taken_from_a_dead_holder_only(redis, key, settings):
    beats = f"{settings.namespace}:test-beats:{uuid.uuid4()}"
    now_ms = int(time.time() * 1000)
    holder = RedisLock(redis, key, ttl_ms=60_000, owner="worker-a")
    assert await holder.acquire_unless_alive(beats, now_ms - 1000)
    await redis.call("ZADD", beats, now_ms, "worker-a")  # worker-a beats now
    other = RedisLock(redis, key, ttl_ms=60_000, owner="worker-b")
    assert not await other.acquire_unless_alive(beats, now_ms - 1000)
    await redis.call("ZADD", beats, now_ms - 5000, "worker-a")  # worker-a stopped beating 5 s ago
    assert await other.acquire_unless_alive(beats, now_ms - 1000)
    assert await redis.call("GET", key) == other.token.encode()
    await redis.call("DEL", beats, key)


async def test_a_worker_heartbeat_keeps_its_locks_until_the_worker_stops(redis, key, settings):
    """RabbitMQ keeps no worker heartbeats: WorkerHeartbeat beats for the locks (workers/heartbeat.py)."""
    heartbeat = WorkerHeartbeat(settings.redis_url, f"{settings.namespace}:test-beats:{uuid.uuid4()}",
                                timeout_ms=600)
    holder = heartbeat.holder
    heartbeat.before_worker_boot(None, None)  # the first beat is written before any message is consumed
    try:
        assert (await redis.call("ZSCORE", holder.heartbeats_key, holder.owner)) is not None
        mine = RedisLock(redis, key, ttl_ms=60_000, owner=holder.owner)
        assert await mine.acquire_unless_alive(holder.heartbeats_key, int(time.time() * 1000) - holder.timeout_ms)
        other = RedisLock(redis, key, ttl_ms=60_000, owner="another-worker")
        for _ in range(4):  # 1.2 s: twice the timeout, so only the beat thread keeps the holder alive
            await asyncio.sleep(0.3)
            dead_before = int(time.time() * 1000) - holder.timeout_ms
            assert not await other.acquire_unless_alive(holder.heartbeats_key, dead_before)
    finally:
        heartbeat.after_worker_shutdown(None, None)
    assert (await redis.call("ZSCORE", holder.heartbeats_key, holder.owner)) is None  # a clean stop says so
    assert await other.acquire_unless_alive(holder.heartbeats_key, int(time.time() * 1000) - holder.timeout_ms)
    assert await redis.call("GET", key) == other.token.encode()


@pytest.mark.parametrize("broker_db, beats_of_its_own", [(None, False), ("1", True)])
def test_the_locks_read_beats_from_their_own_redis_when_the_broker_is_another(settings, broker_db, beats_of_its_own):
    """The takeover script reads holders' beats in REDIS_URL's Redis. Dramatiq's RedisBroker beats in the broker's:
    on another Redis (or database) every live holder would look dead there, and its lock be taken over while its
    attempt runs. The workers then beat into the locks' Redis themselves, as on RabbitMQ."""
    from dataclasses import replace

    from workers.broker import setup_broker
    broker_url = settings.redis_url if broker_db is None else settings.redis_url.rsplit("/", 1)[0] + f"/{broker_db}"
    broker = setup_broker(replace(settings, broker_url=broker_url), sessions=None, db=None, redis=lambda: None)
    beats = [m for m in broker.middleware if isinstance(m, WorkerHeartbeat)]
    assert bool(beats) is beats_of_its_own
    if beats:
        assert beats[0]._redis_url == settings.redis_url


async def test_a_lock_whose_answer_was_lost_is_let_go_not_left_held(redis, key):
    """Redis took the lock, then its answer never came (a timeout): the attempt fails and must let go, or the
    lock, held by a live worker and renewed by nobody, would hold every action on the service for its TTL."""
    from workers.heartbeat import Holder
    from workers.middleware import JobStateMiddleware

    class AnswerLost(RedisLock):
        async def acquire_unless_alive(self, heartbeats_key: str, dead_before_ms: int) -> bool:
            await super().acquire_unless_alive(heartbeats_key, dead_before_ms)
            raise TimeoutError("no answer from Redis")

    middleware = JobStateMiddleware(sessions=None, db=None, locks=lambda _resource, owner: AnswerLost(
        redis, key, 60_000, owner), holder=lambda _broker: Holder("worker-1", f"{key}:beats", 30_000))
    with pytest.raises(TimeoutError):
        await middleware._lock(middleware._holder(None), uuid.uuid4())
    await middleware._keeper.drain()
    assert await redis.call("GET", key) is None


async def test_a_lock_that_vanished_is_taken_again_by_its_holders_renewal(redis, key, caplog):
    """Redis restarted and kept nothing: the attempt still running must hold its service's lock again, or
    another delivery would take it and act on the service at the same time."""
    lock, keeper = RedisLock(redis, key, ttl_ms=5000), LockKeeper(every_s=0.05)
    assert await lock.acquire_new()
    keeper.hold(lock)
    await redis.call("DEL", key)  # what a restart of a Redis that keeps nothing on disk does to it
    await asyncio.sleep(0.2)
    other = RedisLock(redis, key, ttl_ms=5000)
    assert not await other.acquire_new()
    assert await redis.call("GET", key) == lock.token.encode()
    assert f"lock {key} had vanished" in caplog.text
    keeper.let_go(lock)
    await keeper.drain()
    assert await redis.call("GET", key) is None


class _Unreachable:
    """A Redis client whose every command fails, as when Redis is down."""

    async def call(self, *args):
        raise ConnectionError("Connection refused")


async def test_a_renewal_that_cannot_reach_redis_is_logged(caplog):
    lock, keeper = RedisLock(_Unreachable(), "k", ttl_ms=5000), LockKeeper(every_s=0.05)
    keeper.hold(lock)
    await asyncio.sleep(0.12)
    keeper._held.pop(lock)  # stop renewing without a release (which would fail the same way, silently)
    assert "could not renew 1 of 1 held lock(s): Connection refused" in caplog.text


class _Flaky:
    """A Redis client that fails every command while `down`, as when Redis is away for a moment."""

    def __init__(self, real: PipelinedRedis) -> None:
        self.real, self.down = real, False

    async def call(self, *args):
        if self.down:
            raise ConnectionError("Connection refused")
        return await self.real.call(*args)


async def test_a_release_that_did_not_reach_redis_is_sent_again_once_redis_is_back(redis, key):
    """The holder lives on and beats, so nothing else would free its lock before the TTL: the actions waiting
    on the service would wait minutes after a Redis outage of seconds."""
    flaky = _Flaky(redis)
    lock, keeper = RedisLock(flaky, key, ttl_ms=60_000), LockKeeper(every_s=0.05)
    assert await lock.acquire_new()
    keeper.hold(lock)
    flaky.down = True
    keeper.let_go(lock)
    await keeper.drain()
    await asyncio.sleep(0.12)  # two turns: still down
    flaky.down = False
    await asyncio.sleep(0.12)
    assert await redis.call("GET", key) is None

    # One that never gets through is given up once its TTL would have freed it: the keeper's turns end.
    short = RedisLock(flaky, key, ttl_ms=200)
    assert await short.acquire_new()
    flaky.down = True
    keeper.let_go(short)
    await asyncio.sleep(0.4)
    assert keeper._task.done() and not keeper._unreleased


async def test_a_locks_warnings_carry_the_request_id_of_the_attempt_that_holds_it(redis, key):
    """One task renews every lock of the process; it must not log about one job's lock under the request id of
    whichever job's hold started it."""
    import logging

    from workers.logcontext import REQUEST_ID

    seen: list[tuple[str, str | None]] = []

    class _Note(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            seen.append((record.getMessage(), REQUEST_ID.get()))
            return True

    note = _Note()
    logging.getLogger("hostq.locks").addFilter(note)
    keeper = LockKeeper(every_s=0.05)
    first, second = RedisLock(redis, f"{key}:first", ttl_ms=5000), RedisLock(redis, f"{key}:second", ttl_ms=5000)

    async def hold(lock: RedisLock, request_id: str) -> None:  # as an attempt does, in its own task's context
        REQUEST_ID.set(request_id)
        assert await lock.acquire_new()
        keeper.hold(lock)

    try:
        await asyncio.create_task(hold(first, "req_first"))  # starts the renewing task
        await asyncio.create_task(hold(second, "req_second"))
        await redis.call("DEL", second.key)
        await asyncio.sleep(0.2)
    finally:
        logging.getLogger("hostq.locks").removeFilter(note)
        for lock in (first, second):
            keeper.let_go(lock)
        await keeper.drain()
    about_second = [request_id for message, request_id in seen if second.key in message]
    assert about_second and set(about_second) == {"req_second"}, seen
