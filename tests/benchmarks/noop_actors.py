"""The provisioning benchmark's baseline: no-op actors on hostq's own broker set-up, under another namespace.

    PYTHONPATH=. BENCH_NOOP_NAMESPACE=bench-x:noop python -m dramatiq tests.benchmarks.noop_actors \
        --processes 1 --threads 8 --queues noop

The broker comes from `workers.broker.setup_broker`, so Redis options (heartbeat, maintenance chance) and
the middleware stack are hostq's; JobStateMiddleware is present but inert, since these messages carry no
job id. Each actor does nothing but count itself in Redis in one round trip (INCR, plus the first start
and last finish times), which is how the benchmark sees the queue drained.
"""

from __future__ import annotations

import os
import time

import dramatiq
import redis
import redis.asyncio as aioredis

from domain.settings import Settings
from workers.broker import setup_broker

NAMESPACE = os.environ.get("BENCH_NOOP_NAMESPACE", "bench-noop")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
BROKER_URL = os.environ.get("BENCH_BROKER_URL", REDIS_URL)  # the same broker as hostq's in the run
broker = setup_broker(Settings(redis_url=REDIS_URL, broker_url=BROKER_URL, namespace=NAMESPACE),
                      sessions=lambda: None, db=lambda: None)
dramatiq.set_broker(broker)


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
