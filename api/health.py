"""`/health/live` and `/health/ready` (Postgres and Redis checked, each within a short timeout)."""

from __future__ import annotations

import asyncio

from litestar import Request, Response, get
from sqlalchemy import text

from api.problems import problem

CHECK_TIMEOUT_S = 2.0


@get("/health/live", include_in_schema=False, sync_to_thread=False)
def live() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


async def _postgres(request: Request) -> None:
    async with request.app.state.resources.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def _redis(request: Request) -> None:
    await request.app.state.resources.redis.ping()


async def _check(probe, request: Request) -> bool:
    try:
        await asyncio.wait_for(probe(request), CHECK_TIMEOUT_S)
        return True
    except Exception:
        return False


@get("/health/ready", include_in_schema=False)
async def ready(request: Request) -> Response:
    """200 when Postgres and Redis answer; 503 naming each one that does not."""
    results = await asyncio.gather(_check(_postgres, request), _check(_redis, request))
    checks = {"postgres": "ok" if results[0] else "down", "redis": "ok" if results[1] else "down"}
    down = [name for name, state in checks.items() if state == "down"]
    if down:
        response = problem(request, 503, "unavailable", "Service unavailable", f"down: {', '.join(down)}",
                           headers={"Retry-After": "5"})
        response.content["checks"] = checks
        return response
    return Response({"status": "ok", "checks": checks})
