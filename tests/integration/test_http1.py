"""workers/integrations/http1.py over real sockets, on asyncio's loop and on uvloop (the workers' loop).

A scripted server written here counts connections, so reuse, closing and dropping are seen from the outside.
"""

from __future__ import annotations

import asyncio
import datetime
import inspect
import ipaddress
import os
import socket
import ssl
import struct
import sys
import time
from collections.abc import Awaitable, Callable

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from domain.errors import PermanentIntegrationError
from workers.integrations import http1
from workers.integrations.http1 import ConnectionLost, Origin, ProtocolError
from workers.integrations.whm import WhmClient

Step = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]  # True: keep the connection
ENVELOPE = b'{"metadata":{"version":1,"result":1,"reason":"OK"},"data":{"pkg":[{"name":"pro"}]}}'


def on_both_loops(test):
    """Run an async test on asyncio's own loop and on uvloop's, in a loop of its own each time."""
    def run(loop_factory, **fixtures):
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(asyncio.wait_for(test(**fixtures), 10))
    signature = inspect.signature(test)
    first = inspect.Parameter("loop_factory", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    run.__signature__ = signature.replace(parameters=[first, *signature.parameters.values()])
    run.__name__, run.__doc__ = test.__name__, test.__doc__
    return pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop],
                                   ids=["asyncio", "uvloop"])(run)


class Server:
    """Request n gets script[n] (the last step repeats); counts connections accepted and ended."""

    def __init__(self, *script: Step, tls: ssl.SSLContext | None = None) -> None:
        self.script, self.tls = list(script), tls
        self.requests: list[tuple[bytes, bytes]] = []
        self.peers: list[int] = []  # the client's port, request by request
        self.connections = self.ended = 0

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0, ssl=self.tls)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.server.close()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                self.requests.append((head, await reader.readexactly(length)))
                self.peers.append(writer.get_extra_info("peername")[1])
                if not await self.script[min(len(self.requests), len(self.script)) - 1](head, reader, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass  # the client went away
        finally:
            self.ended += 1
            writer.close()


def answer(body: bytes = b"ok", headers: bytes = b"", version: bytes = b"HTTP/1.1", delay: float = 0) -> Step:
    async def step(head, reader, writer) -> bool:
        await asyncio.sleep(delay)
        writer.write(b"%s 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n%s\r\n%s"
                     % (version, len(body), headers, body))
        await writer.drain()
        return True
    return step


def raw(data: bytes, keep: bool = False, pieces: int = 1) -> Step:
    """Write `data` as-is, in `pieces` separate writes; then close unless `keep`."""
    async def step(head, reader, writer) -> bool:
        size = -(-len(data) // pieces)
        for start in range(0, len(data), size):
            writer.write(data[start:start + size])
            await writer.drain()
            if pieces > 1:
                await asyncio.sleep(0.002)  # its own TCP segment (asyncio sets TCP_NODELAY)
        return keep
    return step


async def answer_then_close(head, reader, writer) -> bool:
    """A keep-alive answer, then the server closes the idle connection, as at its keep-alive timeout."""
    return await answer()(head, reader, writer) and False


async def reset(head, reader, writer) -> bool:
    """No answer, a TCP RST: SO_LINGER 0 makes the close send RST, not FIN."""
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
    return False


async def hold(head, reader, writer) -> bool:
    """No answer until the client goes away."""
    await reader.read()
    return False


async def eventually(condition: Callable[[], bool]) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in 2 s")


async def get(origin: Origin, target: str = "/", timeout: float = 2.0) -> http1.Response:
    return await origin.request("GET", target, timeout=timeout, connect_timeout=1.0)


@on_both_loops
async def test_keep_alive_reuses_one_connection():
    async with Server(answer(b"hello")) as server:
        origin = Origin(server.url)
        for _ in range(4):
            response = await get(origin, "/a?b=c")
            assert (response.status, response.reason, response.body) == (200, "OK", b"hello")
            assert response.header(b"content-type") == "text/plain"
        assert server.connections == 1
        await origin.aclose()


@on_both_loops
async def test_idle_connections_are_reused_last_in_first_out():
    async def slow_or_fast(head, reader, writer) -> bool:
        return await answer(delay=0.05 if head.startswith(b"GET /slow") else 0)(head, reader, writer)
    async with Server(slow_or_fast) as server:
        origin = Origin(server.url)
        await asyncio.gather(get(origin, "/slow"), get(origin, "/fast"))
        assert server.connections == 2
        await get(origin)
        slow = next(i for i, (head, _) in enumerate(server.requests) if head.startswith(b"GET /slow"))
        assert server.peers[-1] == server.peers[slow]  # the connection back last is the one used next
        await origin.aclose()


@on_both_loops
async def test_a_connection_the_server_closed_is_not_reused():
    async with Server(answer_then_close, answer()) as server:
        origin = Origin(server.url)
        await get(origin)
        await asyncio.sleep(0.05)  # idle long enough for the FIN to arrive
        assert (await get(origin)).body == b"ok"
        assert server.connections == 2
        await origin.aclose()


@on_both_loops
async def test_a_connection_idle_too_long_is_not_reused(monkeypatch):
    monkeypatch.setattr(http1, "IDLE_S", 0.05)
    async with Server(answer()) as server:
        origin = Origin(server.url)
        await get(origin)
        await asyncio.sleep(0.1)
        await get(origin)
        assert server.connections == 2
        await eventually(lambda: server.ended == 1)  # and the stale one was closed
        await origin.aclose()


@pytest.mark.parametrize("headers, version", [(b"Connection: close\r\n", b"HTTP/1.1"), (b"", b"HTTP/1.0")],
                         ids=["connection-close", "http-1.0"])
@on_both_loops
async def test_connection_close_is_honoured(headers, version):
    async with Server(answer(headers=headers, version=version)) as server:  # the server keeps the socket open
        origin = Origin(server.url)
        for _ in range(3):
            assert (await get(origin)).body == b"ok"
        assert server.connections == 3 and not origin._idle
        await eventually(lambda: server.ended == 3)
        await origin.aclose()


@on_both_loops
async def test_chunked_split_and_until_close_bodies():
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    long = bytes(range(256)) * 40
    script = [raw(chunked, keep=True), raw(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(long), long),
                                           keep=True, pieces=50),
              raw(chunked, keep=True, pieces=len(chunked)), raw(b"HTTP/1.0 200 OK\r\n\r\nuntil the end"),
              # a coding that is not chunked, last: the body also runs until the server closes (RFC 9112, 6.3)
              raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nidentity until the end")]
    async with Server(*script) as server:
        origin = Origin(server.url)
        assert (await get(origin)).body == b"hello world"
        assert (await get(origin)).body == long
        assert (await get(origin)).body == b"hello world"
        assert (await get(origin)).body == b"until the end"
        assert server.connections == 1
        assert (await get(origin)).body == b"identity until the end"
        await origin.aclose()


@on_both_loops
async def test_an_interim_answer_is_skipped():
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
    async with Server(raw(interim, keep=True)) as server:
        origin = Origin(server.url)
        assert (await get(origin)).status == 201
        assert (await get(origin)).status == 201
        assert server.connections == 1
        await origin.aclose()


@pytest.mark.parametrize("step", [reset, raw(b""), raw(b"HTTP/1.1 200 OK\r\nContent-Le"),
                                  raw(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b"),
                                  raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")],
                         ids=["reset", "closed", "cut-in-headers", "cut-in-body", "cut-in-chunk"])
@on_both_loops
async def test_a_connection_ending_before_the_whole_answer_is_connection_lost(step):
    async with Server(step, answer()) as server:
        origin = Origin(server.url)
        with pytest.raises(ConnectionLost) as caught:
            await get(origin)
        assert isinstance(caught.value, OSError) and caught.value.strerror
        assert (await get(origin)).body == b"ok"  # not resent: the next request is the server's second
        assert len(server.requests) == 2 and server.connections == 2
        await origin.aclose()


@pytest.mark.parametrize("garbage", [b"SSH-2.0-OpenSSH_9.2\r\n\r\n", b"HTTP/1.1 2OO OK\r\n\r\n",
                                     b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n"])
@on_both_loops
async def test_an_answer_that_is_not_http_is_a_protocol_error(garbage):
    async with Server(raw(garbage, keep=True), answer()) as server:  # kept open: no waiting for a close
        origin = Origin(server.url)
        with pytest.raises(ProtocolError):
            await get(origin)
        await eventually(lambda: server.ended == 1)  # the client dropped it
        assert (await get(origin)).body == b"ok"
        await origin.aclose()


@on_both_loops
async def test_a_body_over_the_limit_is_refused_and_its_connection_dropped():
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000
    # In 4 writes of ~1.3 kB: no single read is over the limit, their sum is.
    async with Server(raw(big, keep=True, pieces=4), answer(b"x" * 1000)) as server:
        origin = Origin(server.url, max_body=4096)
        with pytest.raises(ProtocolError, match="body over 4096 bytes"):
            await get(origin)
        await eventually(lambda: server.ended == 1)
        assert (await get(origin)).body == b"x" * 1000  # at the limit or under: read whole, on a new connection
        assert server.connections == 2
        await origin.aclose()


@on_both_loops
async def test_headers_over_the_limit_are_refused(monkeypatch):
    monkeypatch.setattr(http1, "MAX_HEAD", 1024)
    async with Server(answer(headers=b"X-Filler: %s\r\n" % (b"y" * 2000)), answer()) as server:
        origin = Origin(server.url)
        with pytest.raises(ProtocolError, match="headers over 1024 bytes"):
            await get(origin)
        assert (await get(origin)).body == b"ok"
        await origin.aclose()


@pytest.mark.parametrize("size", [70_000, 200])
def test_whm_names_an_oversized_answer_a_bad_response(size, monkeypatch):
    monkeypatch.setattr(http1, "MAX_BODY", 65_536)

    async def call():
        async with Server(answer(ENVELOPE + b" " * size)) as server:
            whm = WhmClient(server.url, "root", "tok")
            try:
                return await whm.listpkgs()
            finally:
                await whm.aclose()
    if size < 65_536 - len(ENVELOPE):
        assert asyncio.run(call()) == [{"name": "pro"}]
        return
    with pytest.raises(PermanentIntegrationError) as caught:
        asyncio.run(call())
    assert caught.value.code == "whm_bad_response" and "body over 65536 bytes" in caught.value.message


@on_both_loops
async def test_a_timeout_closes_the_connection_and_the_next_request_works():
    async with Server(hold, answer()) as server:
        origin = Origin(server.url)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await get(origin, timeout=0.2)
        assert 0.15 <= time.monotonic() - started < 1  # uvloop's timers have millisecond precision
        await eventually(lambda: server.ended == 1)
        assert (await get(origin)).body == b"ok"
        assert server.connections == 2 and len(server.requests) == 2
        await origin.aclose()


@on_both_loops
async def test_cancelling_a_request_closes_its_connection():
    async with Server(hold, answer()) as server:
        origin = Origin(server.url)
        call = asyncio.create_task(get(origin))
        await eventually(lambda: len(server.requests) == 1)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await eventually(lambda: server.ended == 1)
        assert not origin._idle
        assert (await get(origin)).body == b"ok"
        await origin.aclose()


@on_both_loops
async def test_idle_connections_kept_are_capped(monkeypatch):
    monkeypatch.setattr(http1, "MAX_IDLE", 2)
    async with Server(answer(delay=0.05)) as server:
        origin = Origin(server.url)
        await asyncio.gather(*(get(origin) for _ in range(4)))
        assert server.connections == 4 and len(origin._idle) == 2
        await eventually(lambda: server.ended == 2)
        await origin.aclose()
        await eventually(lambda: server.ended == 4)


@on_both_loops
async def test_request_shape():
    async with Server(answer()) as server:
        origin = Origin(server.url, headers={"Authorization": "whm root:tok"})
        await origin.request("POST", "/json-api/passwd?user=a", {"Content-Type": "application/x-www-form-urlencoded"},
                             b"password=x%26y", timeout=1, connect_timeout=1)
        await get(origin, "/json-api/listpkgs")
        (post, body), (get_, no_body) = server.requests
        port = server.url.rsplit(":", 1)[1]
        assert post.split(b"\r\n") == [
            b"POST /json-api/passwd?user=a HTTP/1.1", b"Host: 127.0.0.1:" + port.encode(), b"User-Agent: hostq",
            b"Authorization: whm root:tok", b"Content-Type: application/x-www-form-urlencoded",
            b"Content-Length: 14", b"", b""]
        assert body == b"password=x%26y" and no_body == b""
        assert b"content-length" not in get_.lower() and b"accept-encoding" not in get_.lower()
        await origin.aclose()


def test_host_header_and_what_is_refused():
    assert Origin("https://whm.test")._head.startswith(b"Host: whm.test\r\n")
    assert Origin("https://whm.test:443/")._head.startswith(b"Host: whm.test\r\n")
    assert Origin("https://whm.test:2087")._head.startswith(b"Host: whm.test:2087\r\n")
    assert Origin("http://[::1]:8080")._head.startswith(b"Host: [::1]:8080\r\n")
    for url in ("ftp://whm.test", "https://root:pw@whm.test", "https://whm.test/path", "https://whm.test/?q=1",
                "whm.test:2087"):
        with pytest.raises(ValueError):
            Origin(url)
    with pytest.raises(ValueError):
        Origin("https://whm.test", headers={"X": "a\r\nInjected: 1"})


@pytest.mark.parametrize("target", ["no-slash", "/a b", "/a\r\nX: 1", "/é"])
async def test_a_target_must_be_encoded(target):
    with pytest.raises(ValueError):
        await Origin("http://127.0.0.1:9").request("GET", target, timeout=1, connect_timeout=1)


@pytest.fixture(scope="module")
def tls_folder(tmp_path_factory):
    """cert.pem and key.pem: a self-signed certificate for 127.0.0.1, as a fresh cPanel server has."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return folder


@pytest.fixture(scope="module")
def tls_server_context(tls_folder) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_folder / "cert.pem", tls_folder / "key.pem")
    return context


async def test_a_self_signed_certificate_named_by_ssl_cert_file_is_trusted(tls_server_context, tls_folder):
    """What the README tells operators of a WHM on its self-signed certificate (a worker started with it)."""
    script = ("import asyncio, sys\nfrom workers.integrations.whm import WhmClient\n"
              "async def main():\n    async with WhmClient(sys.argv[1], 'root', 'tok') as whm:\n"
              "        print(await whm.listpkgs())\nasyncio.run(main())")
    async with Server(answer(ENVELOPE), tls=tls_server_context) as server:
        for env, expected in (({"SSL_CERT_FILE": str(tls_folder / "cert.pem")}, b"[{'name': 'pro'}]"),
                              ({}, b"whm_tls_untrusted")):
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-c", script, server.url, env={**os.environ, **env},
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            out, _ = await asyncio.wait_for(child.communicate(), 30)
            assert expected in out, out


@on_both_loops
async def test_https_with_a_self_signed_certificate(tls_server_context):
    async with Server(answer(ENVELOPE), tls=tls_server_context) as server:
        origin = Origin(server.url, verify=False)
        for _ in range(3):
            assert (await get(origin)).body == ENVELOPE
        assert server.connections == 1
        await origin.aclose()
        with pytest.raises(ssl.SSLCertVerificationError):
            await get(Origin(server.url))
        # WhmClient: verify=False works; verify=True is a permanent error that names the cause, not the host.
        async with WhmClient(server.url, "root", "tok", verify=False) as whm:
            assert await whm.listpkgs() == [{"name": "pro"}]
        async with WhmClient(server.url, "root", "tok") as whm:
            with pytest.raises(PermanentIntegrationError) as caught:
                await whm.listpkgs()
        assert caught.value.code == "whm_tls_untrusted"
        assert caught.value.message == "listpkgs: SSLCertVerificationError: self-signed certificate"
        assert len(server.requests) == 4  # nothing was sent over an untrusted connection


@on_both_loops
async def test_a_handshake_that_never_ends_is_a_connect_timeout():
    async with Server(hold) as server:  # plain TCP, silent: the TLS handshake waits forever
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await Origin(server.url.replace("http:", "https:"), verify=False).request(
                "GET", "/", timeout=5, connect_timeout=0.2)
        assert time.monotonic() - started < 1
