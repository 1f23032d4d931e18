"""Which worker process holds a service's lock, and whether it is still alive.

A service lock's token names its holder (workers/locks.py), and a lock whose holder has stopped beating may be
taken over at once instead of after its TTL (a killed worker never releases). Dramatiq's Redis broker already
keeps such beats, for its own redelivery: `Holder.of_redis_broker` reads them. RabbitMQ redelivers on its own
(the dead worker's connection drops), so for it `WorkerHeartbeat` keeps the beats in Redis itself.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass

import dramatiq
import redis

log = logging.getLogger("hostq.worker")


@dataclass(frozen=True, slots=True)
class Holder:
    """A process's lock-holder id, the sorted set where live holders beat (score: ms), and how stale means dead."""

    owner: str
    heartbeats_key: str
    timeout_ms: int

    @classmethod
    def of_redis_broker(cls, broker: dramatiq.Broker) -> Holder:
        """The beats of Dramatiq's RedisBroker: its broker id, in `<namespace>:__heartbeats__`."""
        return cls(broker.broker_id, f"{broker.namespace}:__heartbeats__", broker.heartbeat_timeout)


class _WritesEvery(dramatiq.Middleware, ABC):
    """Writes to Redis as the worker boots, before its consumers start, then every `every_s` from a thread of its
    own (`name`) until it stops, once its threads have finished their messages. A failed write is logged as the
    subclass says (`_failed`); the next one may succeed."""

    def __init__(self, redis_url: str, every_s: float, name: str) -> None:
        self._redis_url, self._every_s, self._name = redis_url, every_s, name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: redis.Redis | None = None

    @abstractmethod
    def _write(self, client: redis.Redis) -> None:
        """The write itself (a RedisError is passed to `_failed`)."""

    @abstractmethod
    def _failed(self, exc: redis.RedisError, *, first: bool) -> None:
        """Say that a write failed (`first`: the one at boot)."""

    def _last(self, client: redis.Redis) -> None:
        """What to write once the thread has stopped (nothing unless a subclass says)."""

    def before_worker_boot(self, broker, worker) -> None:
        self._client = redis.Redis.from_url(self._redis_url, socket_timeout=5, socket_connect_timeout=2)
        self._write_once(first=True)
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def _write_once(self, *, first: bool) -> None:
        try:
            self._write(self._client)
        except redis.RedisError as exc:
            self._failed(exc, first=first)

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            self._write_once(first=False)

    def after_worker_shutdown(self, broker, worker) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._client is not None:
            try:
                self._last(self._client)
            except redis.RedisError:
                pass  # what it could not remove goes stale instead
            self._client.close()


class WorkerHeartbeat(_WritesEvery):
    """Beats this worker process's holder id into Redis every third of the timeout.

    The first beat is written before the worker's consumers start, so no lock is ever held under an id that
    others would take for dead. A worker that stops cleanly removes its id (once its threads have finished their
    messages and let go of their locks); a killed one goes stale.
    """

    def __init__(self, redis_url: str, key: str, timeout_ms: int) -> None:
        super().__init__(redis_url, timeout_ms / 3000, "hostq-heartbeat")
        self.holder = Holder(uuid.uuid4().hex, key, timeout_ms)

    def _write(self, client: redis.Redis) -> None:
        now = int(time.time() * 1000)
        pipe = client.pipeline(transaction=False)
        pipe.zadd(self.holder.heartbeats_key, {self.holder.owner: now})
        # Forget holders dead for ten timeouts, and the whole set once every worker has stopped.
        pipe.zremrangebyscore(self.holder.heartbeats_key, "-inf", now - 10 * self.holder.timeout_ms)
        pipe.pexpire(self.holder.heartbeats_key, 10 * self.holder.timeout_ms)
        pipe.execute()

    def _failed(self, exc: redis.RedisError, *, first: bool) -> None:
        log.warning("worker heartbeat not written: %s", exc)  # no lock can be taken either while Redis is down

    def _last(self, client: redis.Redis) -> None:
        client.zrem(self.holder.heartbeats_key, self.holder.owner)  # if Redis is unreachable, it goes stale instead


#: How often a worker writes its broker again (AnnounceBroker): a Redis that lost its data has it back this soon.
ANNOUNCE_EVERY_S = 10.0


class AnnounceBroker(_WritesEvery):
    """Writes which broker the worker consumes (`value`) at `key` in Redis as it boots, and again every
    `every_s`, so that a Redis restarted without its data has it again.

    A command that sends jobs itself (`hostq jobs retry`) compares its own broker with it: sent elsewhere, a job
    would be marked dispatched and wait in a queue nobody reads, so the command leaves it to the relay instead.
    """

    def __init__(self, redis_url: str, key: str, value: str, every_s: float = ANNOUNCE_EVERY_S) -> None:
        super().__init__(redis_url, every_s, "hostq-announce-broker")
        self._key, self._value = key, value

    def _write(self, client: redis.Redis) -> None:
        client.set(self._key, self._value)

    def _failed(self, exc: redis.RedisError, *, first: bool) -> None:
        if first:  # only the commands' check goes without it, and only until a later write succeeds
            log.warning("could not announce this worker's broker: %s", exc)
