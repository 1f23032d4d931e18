"""Sending recorded jobs to the broker: one message per job, carrying its id (and its resource's)."""

from __future__ import annotations

import logging
import time
import uuid
import weakref
from collections.abc import Iterable
from datetime import datetime, timezone
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dramatiq
import dramatiq.errors
import redis.exceptions
from dramatiq.brokers.redis import RedisBroker

from domain.jobs.models import Job
from domain.jobs.rules import RETRYING
from domain.outages import describe
from domain.settings import Settings, SettingsError, redacted

log = logging.getLogger("hostq.dispatch")

#: pika's connection options hostq sets unless HOSTQ_BROKER_URL's query names them: a RabbitMQ that is down or
#: stops answering fails the send within seconds (the job then waits for the relay), where pika's defaults
#: would let a publisher that RabbitMQ blocks (memory or disk alarm) wait for ever.
AMQP_DEFAULTS = {"connection_attempts": "1", "socket_timeout": "2", "stack_timeout": "5",
                 "blocked_connection_timeout": "10"}


def amqp_url(url: str) -> str:
    """`url` with AMQP_DEFAULTS added for every option its query does not set."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    return urlunsplit(parts._replace(query=urlencode({**AMQP_DEFAULTS, **query})))


def make_broker(settings: Settings, publishers: int = 1) -> dramatiq.Broker:
    """The Dramatiq broker named by HOSTQ_BROKER_URL: Redis (namespaced, so deployments can share one Redis)
    or RabbitMQ (give each deployment its own virtual host: the URL's path), sending from `publishers` threads
    of its own (workers/amqp.py: one unless sends must wait for RabbitMQ side by side, as the API's)."""
    if settings.broker_url.startswith(("amqp://", "amqps://")):
        # Imported here: it imports pika, which only a RabbitMQ deployment needs loaded.
        from workers.amqp import HostqRabbitmqBroker

        # A connection RabbitMQ or the network closes (a RabbitMQ restart) is replaced at the next send, but pika
        # logs the dropped connection as an ERROR with a trace. Dramatiq reports the connection problems that
        # matter (a consumer's, a send that fails: see dispatch).
        logging.getLogger("pika").setLevel(logging.CRITICAL)
        # confirm_delivery: enqueue returns once RabbitMQ has the message (persistent, on a durable queue), so a
        # job is marked dispatched only then. An unacknowledged delivery goes back to its queue as soon as the
        # worker's connection drops (a killed worker), with no heartbeat to wait for. Publishing connections stay
        # open while idle, answering RabbitMQ's heartbeats (workers/amqp.py).
        return HostqRabbitmqBroker(url=amqp_url(settings.broker_url), confirm_delivery=True, middleware=[],
                                   publishers=publishers)
    if not settings.broker_url.startswith(("redis://", "rediss://")):
        raise SettingsError("HOSTQ_BROKER_URL must be a redis://, rediss://, amqp:// or amqps:// URL")
    # maintenance_chance: of every million broker commands, how many also requeue the messages of
    # workers whose heartbeat stopped. One in four: an idle worker polls about once a second, so a killed
    # worker's messages come back a few seconds after its heartbeat expires (30 s by default).
    return RedisBroker(url=settings.broker_url, namespace=f"{settings.namespace}:dramatiq",
                       heartbeat_timeout=int(settings.broker_heartbeat_s * 1000), maintenance_chance=250_000,
                       middleware=[], socket_connect_timeout=2, socket_timeout=10)


def broker_identity(settings: Settings) -> str:
    """The broker HOSTQ_BROKER_URL names, fit to show and compare: no password, no connection options."""
    return redacted(urlunsplit(urlsplit(settings.broker_url)._replace(query="", fragment="")))


def announced_key(settings: Settings) -> str:
    """The Redis key (REDIS_URL) where workers announce the broker they consume (workers/broker.py)."""
    return f"{settings.namespace}:workers:broker"


def job_message(job: Job) -> dramatiq.Message:
    """The broker message for a job on its queue: the job id as argument, the resource id (if any) as a keyword."""
    # The resource id travels as an argument too: the actor locks it before its first statement.
    kwargs = {"resource_id": str(job.resource_id)} if job.resource_id else {}
    return dramatiq.Message(queue_name=job.queue, actor_name=job.kind, args=(str(job.id),), kwargs=kwargs,
                            options={"job_id": str(job.id), "request_id": job.request_id,
                                     "resource_id": str(job.resource_id) if job.resource_id else None})


#: After a failed send, a broker is left alone for this long: the jobs meanwhile wait for the relay. A broker
#: that hangs then holds one request (or relay tick) for its timeout, not every one that follows. A broker that
#: answers but refuses one queue's message (a Redis key of the wrong type, a RabbitMQ queue rejecting publishes)
#: rests that queue only: the other regions' jobs go on.
RESEND_AFTER_S = 5.0
_down_until: weakref.WeakKeyDictionary[dramatiq.Broker, float] = weakref.WeakKeyDictionary()
_queue_down_until: weakref.WeakKeyDictionary[dramatiq.Broker, dict[str, float]] = weakref.WeakKeyDictionary()


def _broker_wide(exc: BaseException) -> bool:
    """Whether a failed send concerns the whole broker (out of reach, out of memory, read-only, access refused, or
    anything not known to be about one queue), rather than one queue refusing."""
    cause = exc.args[0] if isinstance(exc, dramatiq.errors.BrokerConnectionError) and exc.args else None
    if cause is not None and any(c.__name__ == "AMQPChannelError" and c.__module__.startswith("pika")
                                 for c in type(cause).__mro__):
        # RabbitMQ answered, about this message's queue: a nack (a queue at its length limit with reject-publish),
        # no queue to route to, the queue's channel closed by the broker (a queue declared otherwise: 404, 406).
        # Dramatiq reports them as ConnectionClosed, once a fresh connection failed the same way. Not so a 403
        # (the user may not publish at all) or a 5xx (the broker's own error).
        code = getattr(cause, "reply_code", None)
        return isinstance(code, int) and (code == 403 or code >= 500)
    if isinstance(exc, redis.exceptions.ResponseError):
        # a key of another type is that queue's (Redis 6 words it "ERR Error running script ...: WRONGTYPE ...");
        # OOM, READONLY, BUSY, MISCONF... concern every queue
        return "WRONGTYPE" not in str(exc)
    return True


def resting_queues(broker: dramatiq.Broker) -> list[str]:
    """The queues whose sends this process leaves to later (a refusal of theirs under RESEND_AFTER_S ago)."""
    now = time.monotonic()
    return [queue for queue, until in _queue_down_until.get(broker, {}).items() if until > now]


def dispatch(broker: dramatiq.Broker, jobs: Iterable[Job]) -> list[tuple[uuid.UUID, int]]:
    """Enqueue each job; return (id, round) of those that reached the broker (the relay sends the rest).

    The round goes with the id so that marking them dispatched later cannot mark a newer round of the same
    job (retried in between), whose message would then never be sent."""
    return send_messages(broker, outgoing(jobs))


def due_in_ms(job: Job, now: datetime | None = None) -> int:
    """How long the message of `job` must wait in the broker: until a retrying job's next attempt is due, so
    that a re-send (of a message the broker lost) keeps the backoff; 0 for every other job."""
    if job.status != RETRYING or job.next_attempt_at is None:
        return 0
    wait = job.next_attempt_at - (now or datetime.now(timezone.utc))
    return max(0, int(wait.total_seconds() * 1000))


def outgoing(jobs: Iterable[Job]) -> list[tuple[uuid.UUID, int, dramatiq.Message, int]]:
    """(id, round, message, delay in ms) of each job: what send_messages takes (made where the rows were read)."""
    now = datetime.now(timezone.utc)
    return [(job.id, job.round, job_message(job), due_in_ms(job, now)) for job in jobs]


def send_messages(broker: dramatiq.Broker, messages: Iterable[tuple[uuid.UUID, int, dramatiq.Message, int]]
                  ) -> list[tuple[uuid.UUID, int]]:
    """Enqueue the jobs' messages; (id, round) of those sent. A send that finds the broker out of reach stops the
    batch and rests the broker for RESEND_AFTER_S; one that a queue refuses rests that queue, and the batch goes
    on with the other queues' messages."""
    sent: list[tuple[uuid.UUID, int]] = []
    if time.monotonic() < _down_until.get(broker, 0.0):
        return sent
    queues_down = _queue_down_until.setdefault(broker, {})
    for job_id, job_round, message, delay_ms in messages:
        # (a queue's delay queue refusing rests the queue: on RabbitMQ the two are declared together anyway)
        queue = message.queue_name
        if queues_down and time.monotonic() < queues_down.get(queue, 0.0):
            continue
        try:
            broker.enqueue(message, delay=delay_ms or None)
        except Exception as exc:  # the job rows stay undispatched for the relay
            if _broker_wide(exc):
                _down_until[broker] = time.monotonic() + RESEND_AFTER_S
                log.warning("the broker refused job %s (%s): it and the rest of its batch wait for the relay "
                            "request_id=%s", job_id, describe(exc), message.options.get("request_id"))
                break
            queues_down[queue] = time.monotonic() + RESEND_AFTER_S
            log.warning("the broker refused job %s of queue %s (%s): that queue's jobs wait for the relay, the "
                        "other queues' go on request_id=%s", job_id, queue, describe(exc),
                        message.options.get("request_id"))
            continue
        sent.append((job_id, job_round))
    return sent
