"""The baseline: a Litestar app whose order intake is one INSERT and one Redis LPUSH, nothing else.

Served by uvicorn in one process, as `hostq api` is. Configured from the environment at start-up
(not at import): BENCH_DATABASE_URL (plain postgresql://), BENCH_REDIS_URL, BENCH_REDIS_KEY.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import asyncpg
import msgspec
import redis.asyncio as aioredis
from litestar import Litestar, Request, get, post

POOL_SIZE = 20  # as hostq's API engine (api/resources.py)
TABLE = """CREATE TABLE IF NOT EXISTS baseline_orders (
    id uuid PRIMARY KEY, body jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"""


async def startup(app: Litestar) -> None:
    """Open the pool and the Redis client; create the table."""
    app.state.pool = await asyncpg.create_pool(os.environ["BENCH_DATABASE_URL"], min_size=POOL_SIZE,
                                               max_size=POOL_SIZE)
    app.state.redis = aioredis.from_url(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    app.state.key = os.environ.get("BENCH_REDIS_KEY", "bench:baseline:orders")
    await app.state.pool.execute(TABLE)


async def shutdown(app: Litestar) -> None:
    """Close the pool and the Redis client."""
    await app.state.redis.aclose()
    await app.state.pool.close()


@post("/orders", status_code=202)
async def order(data: dict[str, Any], request: Request) -> dict[str, str]:
    """Record the order (one INSERT), enqueue its id (one LPUSH), answer 202."""
    order_id = uuid.uuid4()
    state = request.app.state
    await state.pool.execute("INSERT INTO baseline_orders (id, body) VALUES ($1, $2::jsonb)", order_id,
                             msgspec.json.encode(data).decode())
    await state.redis.lpush(state.key, str(order_id))
    return {"id": str(order_id), "status": "queued"}


@get("/health/live", sync_to_thread=False)
def live() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


app = Litestar(route_handlers=[order, live], on_startup=[startup], on_shutdown=[shutdown], debug=False)
