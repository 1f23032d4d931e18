"""The rate limiter's pipelined Redis connection: replies matched in order, timeouts, reconnection."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from api.ratelimit import RateLimiter
from domain.redis_pipe import PipelinedRedis, RedisReplyError


async def test_concurrent_commands_each_get_their_own_reply(settings):
    pipe = PipelinedRedis(settings.redis_url)
    try:
        replies = await asyncio.gather(*(pipe.call("ECHO", f"n{i}") for i in range(300)))
        assert replies == [f"n{i}".encode() for i in range(300)]
        with pytest.raises(RedisReplyError, match="unknown command"):
            await pipe.call("NO-SUCH-COMMAND")
        assert await pipe.call("ECHO", "after an error") == b"after an error"
    finally:
        await pipe.aclose()


async def test_a_late_reply_is_dropped_not_given_to_the_next_command(settings):
    pipe = PipelinedRedis(settings.redis_url, timeout_s=0.05)
    try:
        with pytest.raises(TimeoutError):  # Redis answers BLPOP only after 0.2 s
            await pipe.call("BLPOP", f"hostq-test-empty-{uuid.uuid4()}", "0.2")
        await asyncio.sleep(0.25)  # the late (nil) reply arrives now
        assert await pipe.call("ECHO", "mine") == b"mine"
    finally:
        await pipe.aclose()


async def test_the_database_index_is_selected_and_a_killed_connection_is_reopened(settings):
    pipe = PipelinedRedis(settings.redis_url.rsplit("/", 1)[0] + "/3")
    admin = aioredis.from_url(settings.redis_url)
    try:
        assert b" db=3 " in await pipe.call("CLIENT", "INFO")
        client_id = await pipe.call("CLIENT", "ID")
        await admin.client_kill_filter(_id=client_id)
        outcomes = []
        for _ in range(3):
            try:
                outcomes.append(await pipe.call("ECHO", "again"))
                break
            except ConnectionError:
                outcomes.append("lost")
        assert outcomes[-1] == b"again" and await pipe.call("CLIENT", "ID") != client_id
    finally:
        await pipe.aclose()
        await admin.aclose()


async def test_the_limiter_loads_its_script_when_redis_forgot_it(settings):
    admin = aioredis.from_url(settings.redis_url)
    limiter = RateLimiter(PipelinedRedis(settings.redis_url), settings.namespace)
    try:
        await admin.script_flush()
        decision = await limiter.hit(uuid.uuid4(), 10)
        assert decision is not None and decision.allowed and decision.remaining == 9
    finally:
        await limiter.close()
        await admin.aclose()


async def test_a_rediss_url_speaks_tls():
    """rediss:// is TLS, as redis-py takes it: the first bytes on the wire are a TLS handshake, not a command."""
    first: list[bytes] = []

    async def listen(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first.append(await reader.read(5))
        writer.close()

    server = await asyncio.start_server(listen, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(Exception):  # noqa: B017 (the handshake fails: this listener is no TLS server)
            await PipelinedRedis(f"rediss://127.0.0.1:{port}/0", timeout_s=2).call("PING")
    finally:
        server.close()
        await server.wait_closed()
    assert first and first[0][:2] == b"\x16\x03", first  # a TLS record: handshake, version 3.x
