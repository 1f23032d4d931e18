"""The provisioning benchmark's baseline: no-op actors on hostq's own broker set-up, under another namespace;
and the floor, an actor doing only the I/O any exactly-once provisioning must do.

    PYTHONPATH=. BENCH_NOOP_NAMESPACE=bench-x:noop python -m dramatiq tests.benchmarks.noop_actors \
        --processes 1 --threads 8 --queues noop

The broker comes from `workers.broker.setup_broker`, so Redis options (heartbeat, maintenance chance) and
the middleware stack are hostq's; JobStateMiddleware is present but inert, since these messages carry no
job id. Each actor does nothing but count itself in Redis in one round trip (INCR, plus the first start
and last finish times), which is how the benchmark sees the queue drained.

`floor` (queue `floor`) is not hostq: per message, two single-row UPDATEs by primary key on a bare table
(`bench_floor`: the attempt started, then succeeded), with `verify_new_username` and `createacct` on the
fake WHM between them, through the cheapest clients at hand (an asyncpg pool, hostq's HTTP/1.1 origin pool),
with no lock, no service row, no checks and no error handling. Its rate is a ceiling for any design that records an attempt
before and after its WHM calls on this machine (BENCH_FLOOR_DSN, BENCH_FLOOR_WHM).
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import dramatiq
import redis
import asyncpg
import redis.asyncio as aioredis

from domain.settings import Settings
from workers.broker import setup_broker
from workers.integrations.http1 import Origin

NAMESPACE = os.environ.get("BENCH_NOOP_NAMESPACE", "bench-noop")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
BROKER_URL = os.environ.get("BENCH_BROKER_URL", REDIS_URL)  # the same broker as hostq's in the run
broker = setup_broker(Settings(redis_url=REDIS_URL, broker_url=BROKER_URL, namespace=NAMESPACE),
                      sessions=lambda: None, db=lambda: None)
dramatiq.set_broker(broker)


def send_all(count: int) -> None:
    """`python -m tests.benchmarks.noop_actors COUNT`: send `count` no-op messages, one after the other (as one
    API process sends its jobs); print when the first send began (unix seconds), and the seconds and CPU
    seconds the sends took."""
    first, cpu = time.time(), time.process_time()
    for i in range(count):
        noop.send(i)
    print(json.dumps({"first_send": first, "seconds": time.time() - first, "cpu_s": time.process_time() - cpu}),
          flush=True)


def tally_keys(queue: str) -> tuple[str, str, str]:
    """The Redis keys counting a queue's processed messages: done, first start, last finish."""
    return f"{NAMESPACE}:{queue}:done", f"{NAMESPACE}:{queue}:first", f"{NAMESPACE}:{queue}:last"


_sync_client = redis.Redis.from_url(REDIS_URL)
_async_client: aioredis.Redis | None = None


@dramatiq.actor(queue_name="noop", max_retries=0)
def noop(i: int) -> None:
    """Nothing, then count it."""
    started = time.time()
    done, first, last = tally_keys("noop")
    pipe = _sync_client.pipeline(transaction=False)
    pipe.set(first, started, nx=True).incr(done).set(last, time.time()).execute()


@dramatiq.actor(queue_name="noop_async", max_retries=0)
async def noop_async(i: int) -> None:
    """Nothing, on the AsyncIO middleware's event loop (as hostq's actors run), then count it."""
    global _async_client
    started = time.time()
    if _async_client is None:  # made on the worker's event loop, which it then belongs to
        _async_client = aioredis.from_url(REDIS_URL)
    done, first, last = tally_keys("noop_async")
    pipe = _async_client.pipeline(transaction=False)
    await pipe.set(first, started, nx=True).incr(done).set(last, time.time()).execute()


_floor: dict = {}
_floor_ready: asyncio.Lock | None = None


async def _floor_parts() -> tuple[asyncpg.Pool, Origin]:
    """The floor's pool and WHM origin, made once on the worker's event loop."""
    global _floor_ready
    if _floor_ready is None:
        _floor_ready = asyncio.Lock()
    async with _floor_ready:
        if not _floor:
            _floor["pg"] = await asyncpg.create_pool(os.environ["BENCH_FLOOR_DSN"], min_size=1, max_size=8)
            _floor["whm"] = Origin(os.environ["BENCH_FLOOR_WHM"], headers={
                "Authorization": "whm root:sandbox", "Accept": "application/json"})
    return _floor["pg"], _floor["whm"]


def _whm_ok(body: bytes) -> None:
    result = json.loads(body)["metadata"]["result"]
    if result != 1:
        raise RuntimeError(f"the fake WHM refused: {body[:200]!r}")


@dramatiq.actor(queue_name="floor", max_retries=0)
async def floor(i: int, tag: str) -> None:
    """Attempt started (UPDATE), verify_new_username, createacct, attempt succeeded (UPDATE). Not counted in
    Redis: the benchmark reads the rows' times, as it does hostq's jobs."""
    pg, whm = await _floor_parts()
    user = f"{tag}{i:07d}"
    async with pg.acquire() as db:
        await db.execute("UPDATE bench_floor SET status = 'running', started_at = now() WHERE id = $1", i)
        _whm_ok((await whm.request("GET", f"/json-api/verify_new_username?api.version=1&user={user}",
                                   timeout=10, connect_timeout=2)).body)
        _whm_ok((await whm.request(
            "POST", f"/json-api/createacct?api.version=1&username={user}&domain={user}.example.com&plan=basic",
            {"Content-Type": "application/x-www-form-urlencoded"}, b"password=Floor-pass-1234",
            timeout=10, connect_timeout=2)).body)
        await db.execute("UPDATE bench_floor SET status = 'succeeded', finished_at = now() WHERE id = $1", i)


if __name__ == "__main__":
    import sys
    send_all(int(sys.argv[1]))
