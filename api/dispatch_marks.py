"""Marking jobs as dispatched in batches: one UPDATE per tenant every few milliseconds, not one per request."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.db import CURRENT_TENANT, session_scope
from domain.jobs.service import mark_dispatched

log = logging.getLogger("hostq.api")
FLUSH_AFTER_S = 0.05


class DispatchMarks:
    """Collects the ids of jobs whose message reached the broker and writes them soon after.

    Losing a batch (crash, database down) is harmless: those jobs stay undispatched in Postgres,
    the relay sends them again, and the job middleware skips a delivery whose job already ran.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._pending: dict[str, list[uuid.UUID]] = defaultdict(list)
        self._flusher: asyncio.Task | None = None

    def add(self, tenant_id: uuid.UUID | None, job_ids: list[uuid.UUID]) -> None:
        """Queue these ids for the next flush."""
        self._pending[str(tenant_id or "")].extend(job_ids)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(FLUSH_AFTER_S)
        await self.flush()

    async def flush(self) -> None:
        """Write every pending mark now, tenant by tenant (the API's sessions see one tenant at a time)."""
        pending, self._pending = self._pending, defaultdict(list)
        for tenant, ids in pending.items():
            token = CURRENT_TENANT.set(tenant)
            try:
                async with session_scope(self._sessions) as session:
                    await mark_dispatched(session, ids)
            except Exception as exc:  # the relay covers it
                log.warning("could not mark %d job(s) dispatched: %s", len(ids), exc)
            finally:
                CURRENT_TENANT.reset(token)

    async def close(self) -> None:
        """Flush what is left (at shutdown)."""
        if self._flusher is not None:
            self._flusher.cancel()
        await self.flush()
