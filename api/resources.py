"""What the API process holds for its lifetime: database, Redis, broker."""

from __future__ import annotations

from dataclasses import dataclass

import dramatiq
import redis.asyncio as aioredis
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.dispatch_marks import SENDER_THREADS, BackgroundSender, DispatchMarks
from api.principals import PrincipalCache
from api.ratelimit import RateLimiter
from domain.redis_pipe import PipelinedRedis
from domain.db import make_engine, make_sessionmaker
from domain.pg import LazyPool
from domain.settings import Settings
from workers.dispatch import make_broker

#: The API's ORM engine: connections kept, and more under bursts (HOSTQ_API_DB_POOL's pool serves the hot paths).
ORM_POOL, ORM_OVERFLOW = 5, 10
#: How long one of a request's statements may wait for Postgres before the request is a 503 (workers allow 30 s):
#: a Postgres that hangs (frozen, not refusing connections) must not hold a reseller's request for half a minute.
STATEMENT_TIMEOUT_S = 10.0


@dataclass
class Resources:
    """Per-process connections, opened at start-up and closed at shutdown."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    #: The same pool without BEGIN/COMMIT, for requests that only read (GET).
    read_sessions: async_sessionmaker[AsyncSession]
    #: Plain asyncpg for the hot paths (idempotency, job reads, customer writes): see domain/pg.py.
    pg: LazyPool
    redis: aioredis.Redis
    broker: dramatiq.Broker
    marks: DispatchMarks
    principals: PrincipalCache
    #: Per-tenant rate limits, on their own pipelined Redis connection (domain/redis_pipe.py).
    limiter: RateLimiter
    #: Sends jobs off the event loop when the broker's sends wait on the network (RabbitMQ); None for Redis,
    #: whose send costs less on the loop than a hand-off to a thread.
    sender: BackgroundSender | None = None

    @classmethod
    def open(cls, settings: Settings) -> "Resources":
        """Connect lazily: nothing here blocks when a dependency is down."""
        # The hot paths use `pg` (HOSTQ_API_DB_POOL, default 50, each closed after 60 s unused; a keyed POST holds
        # one from its claim to its commit: fewer than the concurrent requests queue them and stretch the p99); the
        # ORM's pool serves the rest (5 kept, 10 more under bursts).
        engine = make_engine(settings.database_url, pool_size=ORM_POOL, max_overflow=ORM_OVERFLOW, scope="tenant",
                             command_timeout_s=STATEMENT_TIMEOUT_S)
        sessions = make_sessionmaker(engine)
        reads = async_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False,
                                   autoflush=False)
        # Short timeouts: the API's Redis calls are tiny (rate limit, generations), and a Redis that hangs must
        # not hold requests; the rate limiter then lets requests through (api/ratelimit.py).
        client = aioredis.from_url(settings.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
        broker, marks = make_broker(settings, publishers=SENDER_THREADS), DispatchMarks(sessions)
        return cls(settings=settings, engine=engine, sessions=sessions, read_sessions=reads,
                   pg=LazyPool(settings.database_url, max_size=settings.api_db_pool,
                               command_timeout_s=STATEMENT_TIMEOUT_S), redis=client,
                   broker=broker, marks=marks, principals=PrincipalCache(),
                   limiter=RateLimiter(PipelinedRedis(settings.redis_url), settings.namespace),
                   sender=None if isinstance(broker, RedisBroker) else BackgroundSender(broker, marks))

    async def close(self) -> None:
        """Finish the sends under way, write the pending dispatch marks, then close every connection."""
        if self.sender is not None:
            await self.sender.close()
        await self.marks.close()
        await self.redis.aclose()
        await self.limiter.close()
        await self.pg.close()
        await self.engine.dispose()
        self.broker.close()
