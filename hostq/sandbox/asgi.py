"""What the sandbox's fakes share: plain ASGI answers, reading a body, holding or resetting a connection.

Raw ASGI rather than a framework: the fakes sit on benchmarks' paths, and a reset must drop the connection,
which a framework would turn into a 500.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Callable

JSON = b"application/json"
TEXT = b"text/plain; charset=utf-8"
#: Seconds a fake waits for its requests in flight when told to stop: a held one (fault `timeout`) ends then.
STOP_WITHIN_S = 2


async def respond(send: Callable, status: int, body: bytes, content_type: bytes = JSON) -> None:
    """One whole response."""
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Callable) -> bytes:
    """The request's body, whole (what arrived before a disconnect)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def hold(receive: Callable, send: Callable, seconds: float) -> bool:
    """Wait `seconds` without blocking the server; False if the client hangs up first, or if the server stops
    meanwhile (uvicorn cancels what is still running after STOP_WITHIN_S): the connection is then dropped, as a
    stopped server's would be, rather than answered 500 with a traceback in the log."""

    async def hang_up() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    sleeper, listener = asyncio.ensure_future(asyncio.sleep(seconds)), asyncio.ensure_future(hang_up())
    try:
        done, _ = await asyncio.wait({sleeper, listener}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        await drop_connection(send)
        return False
    finally:
        for task in (sleeper, listener):
            task.cancel()
    return sleeper in done


async def pause(send: Callable, seconds: float) -> bool:
    """Sleep `seconds` (a latency); False if the server stops meanwhile: the connection is then dropped, as hold's."""
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        await drop_connection(send)
        return False
    return True


async def drop_connection(send: Callable) -> None:
    """Reset the TCP connection without a response, as a crashed cpsrvd would."""
    # ASGI has no "abort"; uvicorn's send is a method of its request cycle, which holds the transport.
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        # Another server: promise a body and never send it; the client still sees a broken read.
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1024")]})
        return
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.fileno() >= 0:  # -1: the client has gone already, nothing to reset
        # SO_LINGER 0 makes close() send RST instead of FIN: a reset, not a clean close.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    # Let connection_lost run first, so uvicorn knows not to answer 500 on our behalf.
    await asyncio.sleep(0)


async def lifespan(receive: Callable, send: Callable) -> None:
    """Answer the server's lifespan messages: nothing to start or stop."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class SandboxApp:
    """A fake as an ASGI app: lifespan answered, every HTTP request read whole and passed to `handle`."""

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            return await lifespan(receive, send)
        if scope["type"] == "http":
            await self.handle(scope, receive, send, await read_body(receive))
        return None

    async def handle(self, scope: dict, receive: Callable, send: Callable, body: bytes) -> None:
        """Answer one request whose body has been read."""
        raise NotImplementedError
