"""Service locks on real Redis: renewed while held, released only by their holder, taken from dead holders."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from domain.redis_pipe import PipelinedRedis
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
