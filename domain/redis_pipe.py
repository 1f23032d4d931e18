"""One pipelined Redis connection for the hot calls: the API's rate limiter, the workers' service locks.

redis-py's asyncio client costs about 150 us of CPU per command here (a pool checkout, a lock, a task for
the write timeout, packing in Python): more than the rest of a GET's hostq-specific work. This client
sends the commands of each event-loop turn in one write on a single connection and matches replies in order (Redis answers commands
on a connection in the order they were sent), with hiredis (redis-py's own C parser) doing the packing
and parsing. It serves the limiter and the locks (workers/locks.py); everything else uses redis-py.

A reply that does not come within the timeout raises TimeoutError; its slot stays in the queue, so the
late reply is dropped instead of answering the next command. A lost connection fails every waiting
command with ConnectionError and is opened again by the next call.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any
from urllib.parse import urlsplit

import hiredis
from redis.asyncio.connection import parse_url


class RedisReplyError(Exception):
    """Redis answered the command with an error."""


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader()
        self.waiting: deque[asyncio.Future] = deque()
        self.outgoing: list[bytes] = []

    def send(self, command: bytes) -> None:
        """Queue a command; the commands of one event-loop turn leave in one write (and their replies
        mostly arrive in one read), which costs far fewer system calls under load than a write each."""
        if not self.outgoing:
            asyncio.get_running_loop().call_soon(self._flush)
        self.outgoing.append(command)

    def _flush(self) -> None:
        data, self.outgoing = b"".join(self.outgoing), []
        if self.transport is not None:
            self.transport.write(data)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            future = self.waiting.popleft()
            if not future.done():  # done: its caller timed out
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(ConnectionError(f"Redis connection lost: {exc or 'closed'}"))


class PipelinedRedis:
    """`await call(*args)`: one command, its reply (an error reply raises RedisReplyError)."""

    def __init__(self, url: str, *, timeout_s: float = 1.0) -> None:
        options = parse_url(url)
        self._host, self._port = options.get("host", "127.0.0.1"), int(options.get("port", 6379))
        self._setup = [("AUTH", *([options["username"]] if options.get("username") else []), options["password"])] \
            if options.get("password") else []
        if options.get("db"):
            self._setup.append(("SELECT", str(options["db"])))
        # rediss:// (as redis-py takes it): TLS, the server's certificate checked against the system's CAs
        self._tls = ssl.create_default_context() if urlsplit(url).scheme == "rediss" else None
        self._timeout_s = timeout_s
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    async def call(self, *args: Any) -> Any:
        async with asyncio.timeout(self._timeout_s):
            protocol = await self._connected()
            reply = await self._send(protocol, args)
        if isinstance(reply, hiredis.ReplyError):
            raise RedisReplyError(str(reply))
        return reply

    def _send(self, protocol: _Protocol, args: tuple) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        protocol.send(hiredis.pack_command(args))
        protocol.waiting.append(future)
        return future

    async def _connected(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            return protocol
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._protocol is None or self._protocol.transport is None:
                _, protocol = await asyncio.get_running_loop().create_connection(
                    _Protocol, self._host, self._port, ssl=self._tls, server_hostname=self._host if self._tls else None)
                for command in self._setup:
                    reply = await self._send(protocol, command)
                    if isinstance(reply, hiredis.ReplyError):
                        protocol.transport.close()  # type: ignore[union-attr]
                        raise RedisReplyError(str(reply))
                self._protocol = protocol
        return self._protocol  # type: ignore[return-value]

    async def aclose(self) -> None:
        """Close the connection (waiting commands fail)."""
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
