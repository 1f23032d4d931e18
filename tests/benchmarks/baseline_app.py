"""The baseline: a Litestar app whose order intake is one INSERT and one Redis LPUSH, nothing else, and
whose job read (`GET /jobs/{id}`, for bench_api.py) is one primary-key SELECT returned as JSON.

Served by uvicorn in one process, as `hostq api` is. Configured from the environment at start-up
(not at import): BENCH_DATABASE_URL (plain postgresql://), BENCH_REDIS_URL, BENCH_REDIS_KEY.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
import redis.asyncio as aioredis
from litestar import Litestar, Request, get, post
from litestar.exceptions import NotFoundException

POOL_SIZE = 20  # as hostq's API engine (api/resources.py)
TABLE = """CREATE TABLE IF NOT EXISTS baseline_orders (
    id uuid PRIMARY KEY, body jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"""
# A few of hostq's job columns; bench_api.py seeds it with SEED_JOBS (as many rows as hostq jobs it reads).
JOBS_TABLE = """CREATE TABLE IF NOT EXISTS baseline_jobs (
    id uuid PRIMARY KEY, kind text NOT NULL, status text NOT NULL, attempts int NOT NULL,
    max_attempts int NOT NULL, resource_id uuid, request_id text, created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz, finished_at timestamptz)"""
SEED_JOBS = """INSERT INTO baseline_jobs (id, kind, status, attempts, max_attempts, resource_id, request_id)
    SELECT gen_random_uuid(), 'provision.create', 'queued', 0, 6, gen_random_uuid(), 'req_bench_' || n
    FROM generate_series(1, $1) AS n RETURNING id"""
JOB_BY_ID = """SELECT id, kind, status, attempts, max_attempts, resource_id, request_id, created_at, started_at,
    finished_at FROM baseline_jobs WHERE id = $1"""


async def startup(app: Litestar) -> None:
    """Open the pool and the Redis client; create the table."""
    app.state.pool = await asyncpg.create_pool(os.environ["BENCH_DATABASE_URL"], min_size=POOL_SIZE,
                                               max_size=POOL_SIZE)
    app.state.redis = aioredis.from_url(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    app.state.key = os.environ.get("BENCH_REDIS_KEY", "bench:baseline:orders")
    await app.state.pool.execute(TABLE)
    await app.state.pool.execute(JOBS_TABLE)


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


@get("/jobs/{job_id:uuid}")
async def job(job_id: uuid.UUID, request: Request) -> dict[str, str | int | uuid.UUID | datetime | None]:
    """One primary-key SELECT, the row as JSON; 404 when there is none."""
    row = await request.app.state.pool.fetchrow(JOB_BY_ID, job_id)
    if row is None:
        raise NotFoundException("no such job")
    return dict(row)


@get("/health/live", sync_to_thread=False)
def live() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


app = Litestar(route_handlers=[order, job, live], on_startup=[startup], on_shutdown=[shutdown], debug=False)
