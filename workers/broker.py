"""The workers' broker: Redis, with retries, async actors and job-state tracking."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import dramatiq
from dramatiq.middleware import AsyncIO, CurrentMessage, Pipelines, Retries, ShutdownNotifications, TimeLimit

from domain.settings import Settings
from workers.dispatch import make_broker
from workers.middleware import JobStateMiddleware

#: Dramatiq's own retry budget is only a backstop: the job row decides when to stop (JobStateMiddleware).
BACKSTOP_RETRIES = 1000


def setup_broker(settings: Settings, sessions: Callable, queues: Iterable[str] = ()) -> dramatiq.Broker:
    """Make the broker with its middleware in the order they must run, and declare extra queues to consume."""
    broker = make_broker(settings)
    for middleware in (
        TimeLimit(time_limit=int((settings.whm_create_timeout + 120) * 1000)),
        ShutdownNotifications(),
        Pipelines(),
        Retries(max_retries=BACKSTOP_RETRIES, min_backoff=max(1, int(settings.job_backoff_min_s * 1000)),
                max_backoff=max(1, int(settings.job_backoff_max_s * 1000))),
        JobStateMiddleware(sessions),
        AsyncIO(),
        CurrentMessage(),
    ):
        broker.add_middleware(middleware)
    for queue in queues:
        broker.declare_queue(queue)
    return broker
