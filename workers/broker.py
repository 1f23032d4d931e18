"""The workers' broker: Redis, with retries, async actors and job-state tracking."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO, CurrentMessage, Pipelines, Retries, ShutdownNotifications, TimeLimit

from domain.settings import Settings
from workers.dispatch import announced_key, broker_identity, make_broker
from workers.heartbeat import AnnounceBroker, Holder, WorkerHeartbeat
from workers.locks import RedisLock
from workers.logcontext import RequestIdLogContext
from workers.middleware import JobStateMiddleware

#: Dramatiq's own retry budget is only a backstop: the job row decides when to stop (JobStateMiddleware).
BACKSTOP_RETRIES = 1000


def setup_broker(settings: Settings, sessions: Callable, db: Callable, queues: Iterable[str] = (),
                 redis: Callable | None = None) -> dramatiq.Broker:
    """Make the broker with its middleware in the order they must run, and declare extra queues to consume.

    `sessions` (an ORM sessionmaker), `db` (a workers.pg.SystemPool) and `redis` are factories called on the
    worker's event loop (connections belong to a loop).
    """
    broker = make_broker(settings)
    ttl_ms = int(settings.service_lock_ttl_s * 1000)
    locks = (lambda resource, owner: RedisLock(redis(), f"{settings.namespace}:lock:service:{resource}", ttl_ms,
                                               owner)) if redis else None
    heartbeat = None
    # The locks live in REDIS_URL's Redis, and their takeover script reads the holders' beats there. Dramatiq's
    # RedisBroker beats in the broker's Redis: usable only when that is the same one. RabbitMQ keeps none.
    if not isinstance(broker, RedisBroker) or settings.broker_url != settings.redis_url:
        heartbeat = WorkerHeartbeat(settings.redis_url, f"{settings.namespace}:workers:__heartbeats__",
                                    int(settings.broker_heartbeat_s * 1000))
        broker.add_middleware(heartbeat)
    holder = (lambda _: heartbeat.holder) if heartbeat else Holder.of_redis_broker
    broker.add_middleware(AnnounceBroker(settings.redis_url, announced_key(settings), broker_identity(settings)))
    for middleware in (
        RequestIdLogContext(),  # first: its context spans every other middleware's hooks
        TimeLimit(time_limit=int(settings.attempt_time_limit_s * 1000)),
        ShutdownNotifications(),
        Pipelines(),
        Retries(max_retries=BACKSTOP_RETRIES, min_backoff=max(1, int(settings.job_backoff_min_s * 1000)),
                max_backoff=max(1, int(settings.job_backoff_max_s * 1000))),
        JobStateMiddleware(sessions, db, locks, renew_every_s=min(10.0, settings.service_lock_ttl_s / 3),
                           holder=holder, longest_attempt_s=settings.attempt_time_limit_s),
        AsyncIO(),
        CurrentMessage(),
    ):
        broker.add_middleware(middleware)
    for queue in queues:
        broker.declare_queue(queue)
    return broker
