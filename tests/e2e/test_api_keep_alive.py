"""`hostq api` keeps an idle keep-alive connection open longer than httpx keeps it in its pool.

A client reuses a pooled connection until its own keep-alive expiry (httpx: 5 s, counted from when it has read
the answer). uvicorn closes an idle connection after `timeout_keep_alive`, 5 s by default, counted from when it
sent the answer: a little earlier. A request sent on the connection in that gap crosses the server's FIN (or
reaches a socket the server closes unread) and is reset: httpx.ReadError, or RemoteProtocolError, before any
answer and with no access-log line. With the API waiting longer than the client, the client closes first.
"""

from __future__ import annotations

import select
import socket
import time

import httpx

from tests.e2e.conftest import wait_until


def _read_answer(sock: socket.socket) -> bytes:
    """One HTTP/1.1 answer with a Content-Length: its head and body (b"" if the server closed the connection)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.lower().split(b"\r\n")
                  if line.startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_the_api_keeps_an_idle_connection_open_past_httpx_keepalive_expiry(procs, ports):
    port = ports["api"]
    procs.start("api", "api", "--port", str(port))
    wait_until(f"http://127.0.0.1:{port}/health/live")
    request = f"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    client_expiry = httpx.Limits(max_connections=1).keepalive_expiry  # httpx's default, 5 s
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        assert _read_answer(sock).startswith(b"HTTP/1.1 200 "), procs.log("api")
        idle_until = time.monotonic() + client_expiry + 0.5
        readable = False
        while not readable and (left := idle_until - time.monotonic()) > 0:
            readable = bool(select.select([sock], [], [], left)[0])  # the server's FIN makes it readable
        closed_after = client_expiry + 0.5 - max(0.0, idle_until - time.monotonic())
        assert not readable, (f"the API closed an idle keep-alive connection after {closed_after:.1f} s, within "
                              f"httpx's keep-alive expiry ({client_expiry} s): a request sent then is reset")
        sock.sendall(request)  # and the connection still serves a request
        assert _read_answer(sock).startswith(b"HTTP/1.1 200 "), procs.log("api")
