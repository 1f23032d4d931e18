"""HTTP/1.1 to one origin: asyncio transports, the httptools (llhttp) parser, a keep-alive pool; no retries.

What the WHM client needs, at a fraction of aiohttp's CPU: no proxies, redirects, cookies or decompression, and
never a resend (WHM's GETs suspend and remove accounts). Failures: OSError when connecting (refused, DNS, TLS;
ssl.SSLCertVerificationError for an untrusted certificate), ConnectionLost (an OSError) when the connection ends
before the whole response, ProtocolError for an answer that is not HTTP/1.x (or is larger than MAX_HEAD bytes of
headers or MAX_BODY bytes of body), TimeoutError.
"""

from __future__ import annotations

import asyncio
import functools
import re
import ssl
from typing import NamedTuple
from urllib.parse import urlsplit

import httptools

IDLE_S = 4.0  # an idle connection older than this is dropped: servers close them at 5 s (uvicorn) or later
MAX_IDLE = 16  # idle connections kept per origin; more are closed when they come back
#: The largest response body read (listaccts of a full server is a few MB); more is a ProtocolError.
MAX_BODY = 64 * 1024 * 1024
#: The most status-line reason and header bytes read; more is a ProtocolError.
MAX_HEAD = 64 * 1024
_NOT_IN_TARGET = re.compile(r"[^\x21-\x7e]")  # spaces, controls, unencoded non-ASCII


class ConnectionLost(ConnectionError):
    """The server closed or reset the connection before the response was complete."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.strerror = detail  # what error messages show, as for the OSErrors of a failed connect


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.x as this client reads it, or is over a size limit."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.strerror = detail  # shown in error messages; our own words, never the host or the answer's bytes


class Response(NamedTuple):
    """One answer; `headers` as received, names and values in bytes."""

    status: int
    reason: str
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> str | None:
        """The first value of the header `name` (lower case), or None."""
        for key, value in self.headers:
            if key.lower() == name:
                return value.decode("latin-1")
        return None


@functools.cache
def _tls_context(verify: bool) -> ssl.SSLContext:
    """One context per mode for the process: loading the CA store costs milliseconds."""
    context = ssl.create_default_context()
    if not verify:  # cPanel servers often answer on :2087 with a self-signed certificate
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _TooLarge(Exception):
    """Raised from a parser callback: the response is over a limit (data_received names it)."""


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection and the parser of the response in flight."""

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[Response] | None = None
        self.usable = True  # False once the server closed it, it failed, or it may not be reused
        self.idle_since = 0.0

    def send(self, request: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Response]:
        """Write one request; the future gets its response."""
        self.waiter = loop.create_future()
        self._new_response()
        self.transport.write(request)
        return self.waiter

    def close(self) -> None:
        """Drop the connection at once: it failed, timed out, was cancelled mid-exchange or is not reusable."""
        self.usable = False
        if self.transport is not None:
            self.transport.abort()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # bytes while idle: not a state worth reusing
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:  # a callback's _TooLarge arrives wrapped, as its __context__
            refused = exc.__context__ if isinstance(exc.__context__, _TooLarge) else None
            self._fail(ProtocolError(str(refused) if refused else f"malformed response: {exc}"))
            self.close()

    def eof_received(self) -> None:
        self._ended(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended(exc)

    def _ended(self, exc: Exception | None) -> None:
        self.usable = False
        if self.waiter is None:
            return
        if exc is None and self.headers_done and self._ends_at_close():
            self.on_message_complete()  # a body that runs until the server closes, as HTTP/1.0 allows
            return
        detail = getattr(exc, "strerror", None) or "connection closed before the response was complete"
        self._fail(ConnectionLost(detail))

    def _ends_at_close(self) -> bool:
        """Whether the response's body is whatever came before the server closed (RFC 9112, 6.3): it has no
        Content-Length, and no Transfer-Encoding or one whose last coding is not chunked."""
        codings = b",".join(v for k, v in self.headers if k.lower() == b"transfer-encoding")
        return not any(k.lower() == b"content-length" for k, _ in self.headers) and (
            codings.rsplit(b",", 1)[-1].strip().lower() != b"chunked")

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self.waiter is None:  # an answer nobody asked for: never reuse this connection
            self.usable = False

    def on_status(self, reason: bytes) -> None:
        self._count_head(len(reason))
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value))
        self.headers.append((name, value))

    def _count_head(self, size: int) -> None:
        self.head_size += size
        if self.head_size > MAX_HEAD:
            raise _TooLarge(f"response headers over {MAX_HEAD} bytes")

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > self.max_body:
            raise _TooLarge(f"response body over {self.max_body} bytes")
        self.body.append(body)

    def _new_response(self) -> None:
        self.reason, self.headers, self.body, self.headers_done = b"", [], [], False
        self.head_size = self.body_size = 0

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue, 103): the real one follows
            self._new_response()
            return
        waiter, self.waiter = self.waiter, None
        if waiter is None:  # a second answer to one request: not a connection to reuse
            self.close()
            return
        if not self.parser.should_keep_alive():  # Connection: close, or HTTP/1.0 without keep-alive
            self.usable = False
        if not waiter.done():
            waiter.set_result(Response(status, self.reason.decode("latin-1"), self.headers, b"".join(self.body)))


class Origin:
    """Requests to one scheme://host:port over a LIFO pool of keep-alive connections; no retries."""

    def __init__(self, url: str, *, verify: bool = True, headers: dict[str, str] | None = None,
                 max_body: int | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password \
                or parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("an origin is scheme://host[:port], http or https")
        self.host, self.port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        self._tls = _tls_context(verify) if parts.scheme == "https" else None
        host = f"[{self.host}]" if ":" in self.host else self.host
        if parts.port and parts.port != (443 if self._tls else 80):
            host = f"{host}:{self.port}"
        # Encoded once: every request starts its header block with these lines.
        self._head = _encode_headers({"Host": host, "User-Agent": "hostq", **(headers or {})})
        self._max_body = MAX_BODY if max_body is None else max_body
        self._idle: list[_Connection] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    async def request(self, method: str, target: str, headers: dict[str, str] | None = None,
                      body: bytes | None = None, *, timeout: float, connect_timeout: float) -> Response:
        """Send one request and read its whole response; `timeout` bounds it all, connecting included."""
        if self._closed:
            raise RuntimeError("Origin is closed")
        if not target.startswith("/") or _NOT_IN_TARGET.search(target) or method == "HEAD":
            raise ValueError("the target is an encoded path and query; HEAD is not supported")
        head = b"".join((method.encode("ascii"), b" ", target.encode("ascii"), b" HTTP/1.1\r\n", self._head,
                         _encode_headers(headers) if headers else b""))
        if body is not None:
            head += b"Content-Length: %d\r\n" % len(body)
        request = head + b"\r\n" + body if body else head + b"\r\n"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        connection = self._reuse(loop)
        try:
            if connection is None:
                connection = _Connection(self._max_body)
                async with asyncio.timeout(min(connect_timeout, timeout)):
                    # The factory returns our instance, so a connect finished just as it timed out is closed.
                    await loop.create_connection(lambda: connection, self.host, self.port, ssl=self._tls,
                                                 server_hostname=self.host if self._tls else None)
            waiter = connection.send(request, loop)
            # The rest of the deadline as a timer on the response's future: asyncio.timeout, which cancels the
            # task, costs ~5 us more a call (measured, uvloop).
            timer = loop.call_at(deadline, _expire, waiter)
            try:
                response = await waiter
            finally:
                timer.cancel()
        except BaseException:  # a timeout, cancellation or failure mid-exchange: the connection's state is unknown
            connection.close()
            raise
        self._release(connection, loop)
        return response

    def _reuse(self, loop: asyncio.AbstractEventLoop) -> _Connection | None:
        """The most recently used idle connection still worth reusing, or None."""
        if self._loop is not loop:  # connections belong to the loop that made them (one loop at a time)
            self._idle, self._loop = [], loop
        now = loop.time()
        while self._idle:
            connection = self._idle.pop()
            if connection.usable and now - connection.idle_since < IDLE_S:
                return connection
            connection.transport.close()  # stale, or the server closed it
        return None

    def _release(self, connection: _Connection, loop: asyncio.AbstractEventLoop) -> None:
        if connection.usable and not self._closed and self._loop is loop and len(self._idle) < MAX_IDLE:
            connection.idle_since = loop.time()
            self._idle.append(connection)
        else:
            connection.transport.close()

    async def aclose(self) -> None:
        """Close the idle connections; those in use close when their exchange ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.usable = False
            connection.transport.close()


def _expire(waiter: asyncio.Future[Response]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _encode_headers(headers: dict[str, str]) -> bytes:
    text = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    if text.count("\r") != len(headers) or text.count("\n") != len(headers):  # no header injected by a value
        raise ValueError("a header name or value holds a line break")
    return text.encode("latin-1")
