"""`/health/live` and `/health/ready` (Postgres, Redis and a broker of its own, each checked within a short timeout)."""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

from litestar import HttpMethod, Request, Response, route
from sqlalchemy import text

from api.problems import problem

CHECK_TIMEOUT_S = 2.0


#: Load balancers and uptime probes often ask with HEAD: the same answer, without its body.
_PROBE = [HttpMethod.GET, HttpMethod.HEAD]


@route("/health/live", http_method=_PROBE, include_in_schema=False, sync_to_thread=False)
def live() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


async def _postgres(request: Request) -> None:
    async with request.app.state.resources.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def _redis(request: Request) -> None:
    await request.app.state.resources.redis.ping()


def _broker_name(request: Request) -> str | None:
    """The check's name for a broker apart from REDIS_URL (RabbitMQ, another Redis); None when it is that Redis."""
    settings = request.app.state.resources.settings
    if settings.broker_url == settings.redis_url:
        return None
    return "rabbitmq" if urlsplit(settings.broker_url).scheme.startswith("amqp") else "broker"


#: What the broker is sent, and how its answer must begin: RabbitMQ answers the AMQP 0-9-1 protocol header
#: with Connection.Start (a method frame, type 1); Redis answers PING with a status or an error (NOAUTH too:
#: the server is there).
_GREETINGS = {"amqp": (b"AMQP\x00\x00\x09\x01", (b"\x01",)), "redis": (b"PING\r\n", (b"+", b"-"))}


async def _broker(request: Request) -> None:
    """The broker answers the first step of its own protocol, then the probe hangs up.

    A TCP connect alone would call a RabbitMQ that accepts connections but never answers (overloaded, its
    Erlang VM stuck) ready, while every send to it times out. A full AMQP handshake would open a connection
    and a channel per probe; this stops after the server's first frame."""
    url = urlsplit(request.app.state.resources.settings.broker_url)
    protocol = "amqp" if url.scheme.startswith("amqp") else "redis"
    default_port = {"amqp": 5672, "amqps": 5671}.get(url.scheme, 6379)
    tls = ssl.create_default_context() if url.scheme in ("amqps", "rediss") else None
    reader, writer = await asyncio.open_connection(url.hostname or "127.0.0.1", url.port or default_port, ssl=tls)
    try:
        greeting, answers = _GREETINGS[protocol]
        writer.write(greeting)
        await writer.drain()
        if await reader.readexactly(1) not in answers:
            raise ConnectionError(f"the broker at {url.hostname}:{url.port} does not speak {protocol}")
    finally:
        writer.close()


async def _check(probe, request: Request) -> bool:
    try:
        await asyncio.wait_for(probe(request), CHECK_TIMEOUT_S)
        return True
    except Exception:
        return False


@route("/health/ready", http_method=_PROBE, include_in_schema=False)
async def ready(request: Request) -> Response:
    """200 when Postgres, Redis (and the broker, unless it is that Redis) answer; 503 naming each that does not."""
    probes = {"postgres": _postgres, "redis": _redis}
    broker = _broker_name(request)
    if broker is not None:
        probes[broker] = _broker
    results = await asyncio.gather(*(_check(probe, request) for probe in probes.values()))
    checks = {name: "ok" if up else "down" for name, up in zip(probes, results)}
    down = [name for name, state in checks.items() if state == "down"]
    if down:
        response = problem(request, 503, "unavailable", "Service unavailable", f"down: {', '.join(down)}",
                           headers={"Retry-After": "5"})
        response.content["checks"] = checks
        return response
    return Response({"status": "ok", "checks": checks})
