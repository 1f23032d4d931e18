"""Entry module for `dramatiq workers.main`: the broker, then every actor module."""

import os

import dramatiq

from domain.settings import load_settings
from workers.broker import setup_broker
from workers.runtime import runtime

# A regional worker consumes provisioning.<region>: `hostq worker --region R` names it here.
_queues = filter(None, os.environ.get("HOSTQ_WORKER_QUEUES", "").split(","))
broker = setup_broker(load_settings(), lambda: runtime().sessions, _queues)
dramatiq.set_broker(broker)

from workers import provisioning  # noqa: E402,F401  (actors register on the broker set above)
