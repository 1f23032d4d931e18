"""Workers keep announcing their broker in Redis, so that `hostq jobs retry` can tell it is pointed elsewhere even
after a Redis restart lost the key (found by an acceptance pass: the check was skipped until a worker booted)."""

from __future__ import annotations

import time

import redis

from tests.conftest import REDIS_URL, RUN
from workers.heartbeat import AnnounceBroker


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_a_worker_announces_its_broker_again_after_redis_lost_it():
    key = f"hostq-test-{RUN}-announce:workers:broker"
    client = redis.Redis.from_url(REDIS_URL)
    announce = AnnounceBroker(REDIS_URL, key, "amqp://127.0.0.1:5672/hostq", every_s=0.1)
    try:
        announce.before_worker_boot(None, None)
        assert client.get(key) == b"amqp://127.0.0.1:5672/hostq"  # at boot, before any consumer starts
        client.delete(key)  # what a Redis restarted without its data shows
        assert _wait_for(lambda: client.get(key) == b"amqp://127.0.0.1:5672/hostq", 5)
        announce.after_worker_shutdown(None, None)
        client.delete(key)
        time.sleep(0.3)
        assert client.get(key) is None  # a stopped worker announces nothing
    finally:
        announce.after_worker_shutdown(None, None)
        client.delete(key)
        client.close()
