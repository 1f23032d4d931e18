"""`hostq dev` sizes the API's pool so that every process it starts fits in Postgres's `max_connections`."""

from __future__ import annotations

import asyncio

from api.resources import ORM_OVERFLOW, ORM_POOL
from domain.pg import connect
from hostq import dev
from schedules.clock import PROCESS_CONNECTIONS as SCHEDULER
from workers.runtime import PROCESS_CONNECTIONS as WORKER


def _allowed(settings) -> int:
    async def read() -> int:
        conn = await connect(settings.database_url)
        try:
            return int(await conn.fetchval("SHOW max_connections")) - int(
                await conn.fetchval("SHOW superuser_reserved_connections"))
        finally:
            await conn.close()
    return asyncio.run(read())


def test_the_api_pool_leaves_room_for_every_other_process_and_a_spare_few(settings, monkeypatch, capsys):
    monkeypatch.delenv("HOSTQ_API_DB_POOL", raising=False)
    allowed = _allowed(settings)
    for regions in (1, 2):
        workers = 1 + regions  # the general worker and one per region
        pool = dev._api_pool(settings, workers=workers)
        most = pool + ORM_POOL + ORM_OVERFLOW + workers * WORKER + SCHEDULER
        assert dev.MIN_API_POOL <= pool <= settings.api_db_pool
        assert most + dev.SPARE_CONNECTIONS <= allowed, (regions, pool, most, allowed)
    assert capsys.readouterr().err == ""


def test_too_many_regions_for_the_server_get_the_smallest_pool_and_a_warning(settings, monkeypatch, capsys):
    monkeypatch.delenv("HOSTQ_API_DB_POOL", raising=False)
    workers = _allowed(settings) // WORKER + 1  # more workers than Postgres has connections for
    assert dev._api_pool(settings, workers=workers) == dev.MIN_API_POOL
    assert "raise max_connections or start fewer regions" in capsys.readouterr().err


def test_a_pool_set_in_the_environment_is_left_alone(settings, monkeypatch):
    monkeypatch.setenv("HOSTQ_API_DB_POOL", "64")
    assert dev._api_pool(settings, workers=2) is None
