"""What an actor needs, made once per worker process: settings, database sessions, Redis, WHM clients."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.db import make_engine, make_sessionmaker
from domain.provisioning.accounts import ServerRef
from domain.provisioning.models import WhmServer
from domain.redis_pipe import PipelinedRedis
from domain.provisioning.service import server_token
from domain.settings import Settings, load_settings
from workers.integrations.whm import WhmClient
from workers.pg import SystemPool


#: Connections of the worker's SystemPool. An attempt takes one per statement (workers/middleware.py), so this
#: bounds the statements in flight, not the attempts: threads waiting for WHM hold none.
DB_CONNECTIONS = 10
#: Connections of its ORM engine, kept (and as many more under bursts): the rest of the worker's statements.
ORM_POOL = 5
#: The most Postgres connections one worker process opens.
PROCESS_CONNECTIONS = DB_CONNECTIONS + 2 * ORM_POOL


@dataclass
class Runtime:
    """Per-process resources; created lazily on the worker's event loop."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    db: SystemPool
    redis: PipelinedRedis  # the service locks (workers/locks.py)
    _whm: dict[uuid.UUID, tuple[tuple[str, str, bytes], WhmClient]] = field(default_factory=dict)

    def whm_for(self, server: WhmServer | ServerRef) -> WhmClient:
        """A pooled WHM client for the server (one per server per process), made again when `hostq servers
        update` changed the server's URL, username or token (each attempt reads them from the server's row)."""
        seen = (server.url, server.username, server.token_encrypted)
        known = self._whm.get(server.id)
        if known is None or known[0] != seen:
            # An attempt still using the old client keeps it until it ends; its idle connections close when it
            # is collected (not closed here: that would cut a createacct in flight).
            known = seen, WhmClient(server.url, server.username, server_token(self.settings.require_kek(), server),
                                    create_timeout=self.settings.whm_create_timeout,
                                    read_timeout=self.settings.whm_read_timeout)
            self._whm[server.id] = known
        return known[1]


_runtime: Runtime | None = None


def runtime() -> Runtime:
    """The process's Runtime, made on first use."""
    global _runtime
    if _runtime is None:
        settings = load_settings()
        _runtime = Runtime(settings=settings, sessions=make_sessionmaker(make_engine(settings.database_url, pool_size=ORM_POOL)),
                           db=SystemPool(settings.database_url, max_size=DB_CONNECTIONS),
                           redis=PipelinedRedis(settings.redis_url, timeout_s=5))
    return _runtime
