"""The workers' broker: Redis, with retries, async actors and job-state tracking."""

from __future__ import annotations

import os

import dramatiq
from dramatiq.middleware import AsyncIO, CurrentMessage, Pipelines, Retries, ShutdownNotifications, TimeLimit

from domain.settings import Settings
from workers.dispatch import make_broker
from workers.middleware import JobStateMiddleware
from workers.runtime import runtime

#: Dramatiq's own retry budget is only a backstop: the job row decides when to stop (JobStateMiddleware).
BACKSTOP_RETRIES = 1000


def setup_broker(settings: Settings) -> dramatiq.Broker:
    """Make the broker, add the middleware in the order they must run, declare this worker's queues."""
    broker = make_broker(settings)
    for middleware in (
        TimeLimit(time_limit=int((settings.whm_create_timeout + 120) * 1000)),
        ShutdownNotifications(),
        Pipelines(),
        Retries(max_retries=BACKSTOP_RETRIES, min_backoff=int(settings.job_backoff_min_s * 1000) or 1,
                max_backoff=int(settings.job_backoff_max_s * 1000) or 1),
        JobStateMiddleware(lambda: runtime().sessions),
        AsyncIO(),
        CurrentMessage(),
    ):
        broker.add_middleware(middleware)
    # A regional worker consumes provisioning.<region>; `hostq worker` passes the queues it serves.
    for queue in filter(None, os.environ.get("HOSTQ_WORKER_QUEUES", "").split(",")):
        broker.declare_queue(queue)
    dramatiq.set_broker(broker)
    return broker
