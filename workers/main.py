"""Entry module for `dramatiq workers.main`: the broker, then every actor module."""

import asyncio
import logging
import os

import dramatiq
import uvloop

import domain.models  # noqa: F401  (every table known, so foreign keys resolve in this process)
from domain.settings import load_settings
from workers.broker import setup_broker
from workers.logcontext import install_filter
from workers.runtime import runtime
from workers.signals import stop_once_per_burst, stop_with_parent

# The AsyncIO middleware's loop runs every job's I/O on one thread; uvloop's transports and asyncpg's
# protocol cost less CPU on it than the default loop's. Set before the worker boots and makes its loop.
asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

# A regional worker consumes provisioning.<region>: `hostq worker --region R` names it here.
_queues = filter(None, os.environ.get("HOSTQ_WORKER_QUEUES", "").split(","))
broker = setup_broker(load_settings(), lambda: runtime().sessions, lambda: runtime().db, _queues,
                      redis=lambda: runtime().redis)
dramatiq.set_broker(broker)
stop_with_parent()  # orphaned by a `kill -9` of `hostq worker`, stop (workers/signals.py)
stop_once_per_burst()  # a group's SIGTERM arrives twice: stop once (workers/signals.py)
install_filter()  # the request id in the log lines about a job's message (workers/logcontext.py)


class _ResultsKept(logging.Filter):
    """Actors return their job's result for JobStateMiddleware to store; Dramatiq warns it was 'discarded'."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "haven't added the Results middleware" not in str(record.msg)


logging.getLogger("dramatiq.worker.WorkerThread").addFilter(_ResultsKept())

from workers import provisioning  # noqa: E402,F401  (actors register on the broker set above)
