"""Which Dramatiq broker HOSTQ_BROKER_URL makes, and the connection options hostq gives RabbitMQ."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import dramatiq
import dramatiq.errors
import pika.exceptions
import pytest
import redis.exceptions
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker

from domain.settings import Settings, SettingsError
from workers import dispatch as dispatch_module
from workers.dispatch import RESEND_AFTER_S, amqp_url, dispatch, make_broker


def test_amqp_url_adds_short_timeouts_but_keeps_what_the_operator_set():
    url = amqp_url("amqp://hostq:s3cret@rabbit.internal:5672/prod?heartbeat=30&socket_timeout=7")
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("amqp", "hostq:s3cret@rabbit.internal:5672", "/prod")
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query == {"heartbeat": "30", "socket_timeout": "7", "connection_attempts": "1", "stack_timeout": "5",
                     "blocked_connection_timeout": "10"}


def test_amqp_urls_make_a_confirming_rabbitmq_broker_and_redis_urls_a_namespaced_redis_one():
    rabbit = make_broker(Settings(broker_url="amqps://u:p@rabbit.internal/hostq"))
    redis = make_broker(Settings(broker_url="redis://127.0.0.1:6379/3", namespace="acme"))
    try:
        assert isinstance(rabbit, RabbitmqBroker) and rabbit.confirm_delivery
        assert rabbit.parameters.virtual_host == "hostq" and rabbit.parameters.socket_timeout == 2
        assert rabbit.parameters.blocked_connection_timeout == 10
        assert isinstance(redis, RedisBroker) and redis.namespace == "acme:dramatiq"
    finally:
        rabbit.close()
        redis.close()


def test_any_other_broker_url_is_refused_naming_the_variable():
    with pytest.raises(SettingsError, match="HOSTQ_BROKER_URL"):
        make_broker(Settings(broker_url="kafka://broker:9092"))


class _Broker(dramatiq.Broker):
    """A broker whose sends fail while `down` (what dispatch sees of a RabbitMQ or Redis that is unreachable)."""

    def __init__(self) -> None:
        super().__init__(middleware=[])
        self.down, self.tries, self.sent, self.delays = True, 0, [], []

    def enqueue(self, message, *, delay=None):
        self.tries += 1
        if self.down:
            raise ConnectionError("broker unreachable")
        self.sent.append(message)
        self.delays.append(delay)
        return message


def _jobs(n: int, status: str = "queued", next_attempt_at: datetime | None = None) -> list[SimpleNamespace]:
    return [SimpleNamespace(id=uuid.uuid4(), round=1, queue="provisioning.us", kind="provision.create",
                            resource_id=None, request_id=None, status=status, next_attempt_at=next_attempt_at)
            for _ in range(n)]


def test_a_retrying_jobs_message_is_sent_for_when_its_next_attempt_is_due():
    """A re-sent retrying job (its message lost with the broker's data) keeps its backoff; others go now."""
    broker = _Broker()
    broker.down = False
    soon = datetime.now(timezone.utc) + timedelta(seconds=40)
    overdue = datetime.now(timezone.utc) - timedelta(seconds=5)
    jobs = _jobs(1) + _jobs(1, "retrying", soon) + _jobs(1, "retrying", overdue) + _jobs(1, "retrying")
    assert len(dispatch(broker, jobs)) == 4
    assert broker.delays[0] is None and broker.delays[2] is None and broker.delays[3] is None
    assert 39_000 < broker.delays[1] <= 40_000


def test_a_failed_send_stops_the_batch_and_rests_the_broker_then_sends_resume(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(dispatch_module.time, "monotonic", lambda: clock[0])
    broker, jobs = _Broker(), _jobs(3)

    assert dispatch(broker, jobs) == [] and broker.tries == 1  # not three sends of the broker's timeout
    clock[0] += RESEND_AFTER_S - 0.1
    assert dispatch(broker, jobs) == [] and broker.tries == 1  # resting: left to the relay, not tried
    broker.down = False
    clock[0] += 0.2
    assert dispatch(broker, jobs) == [(j.id, 1) for j in jobs] and broker.tries == 4
    assert [m.options["job_id"] for m in broker.sent] == [str(j.id) for j in jobs]
    broker.down, other = True, _Broker()
    assert dispatch(broker, jobs) == [] and dispatch(other, jobs) == []
    assert other.tries == 1  # resting one broker does not rest another


class _OneQueueRefused(_Broker):
    """A broker that answers, but refuses one queue's messages (a Redis key of the wrong type, say)."""

    def enqueue(self, message, *, delay=None):
        self.tries += 1
        if message.queue_name == "provisioning.us":
            raise redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")
        self.sent.append(message)
        return message


def test_a_queue_that_refuses_rests_alone_and_the_batch_goes_on_with_the_other_queues(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(dispatch_module.time, "monotonic", lambda: clock[0])
    broker = _OneQueueRefused()
    us, eu = _jobs(3), [SimpleNamespace(**{**vars(j), "queue": "provisioning.eu"}) for j in _jobs(3)]
    mixed = [us[0], eu[0], us[1], eu[1], us[2], eu[2]]
    assert dispatch(broker, mixed) == [(j.id, 1) for j in eu]
    assert broker.tries == 4  # us tried once, then left to the relay; every eu one sent
    assert dispatch_module.resting_queues(broker) == ["provisioning.us"]
    assert dispatch(broker, eu) == [(j.id, 1) for j in eu]  # the broker itself is not resting
    clock[0] += RESEND_AFTER_S + 0.1
    assert dispatch_module.resting_queues(broker) == []
    assert dispatch(broker, us[:1]) == [] and broker.tries == 8  # tried again once its rest is over


class _Refusing(_Broker):
    """A broker that answers every send with `error`, for messages to `queue` (delayed ones only if `delayed`)."""

    def __init__(self, error: Exception, queue: str = "provisioning.us", delayed: bool = False) -> None:
        super().__init__()
        self.error, self.queue, self.delayed = error, queue, delayed

    def enqueue(self, message, *, delay=None):
        self.tries += 1
        if message.queue_name == self.queue and (delay or not self.delayed):
            raise self.error
        self.sent.append(message)
        return message


def test_a_redis_error_about_the_whole_server_rests_the_broker_not_one_queue():
    for error in (redis.exceptions.OutOfMemoryError("OOM command not allowed when used memory > 'maxmemory'"),
                  redis.exceptions.ReadOnlyError("READONLY You can't write against a read only replica.")):
        broker = _Refusing(error)
        us, eu = _jobs(1), [SimpleNamespace(**{**vars(j), "queue": "provisioning.eu"}) for j in _jobs(1)]
        assert dispatch(broker, us + eu) == [] and broker.tries == 1  # the batch stops: the broker rests
        assert dispatch(broker, eu) == [] and broker.tries == 1
        assert dispatch_module.resting_queues(broker) == []


def test_a_refused_delay_queue_rests_its_queue_and_the_others_go_on():
    broker = _Refusing(redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"),
                       delayed=True)
    soon = datetime.now(timezone.utc) + timedelta(seconds=40)
    retrying, eu = _jobs(1, "retrying", soon), [SimpleNamespace(**{**vars(j), "queue": "provisioning.eu"})
                                                for j in _jobs(2)]
    assert dispatch(broker, retrying + _jobs(1) + eu) == [(j.id, 1) for j in eu]
    assert dispatch_module.resting_queues(broker) == ["provisioning.us"] and broker.tries == 3


@pytest.mark.parametrize("error, one_queue", [
    # Redis 6 words a script's error "ERR Error running script ...: WRONGTYPE ..."
    (redis.exceptions.ResponseError("Error running script (call to f_1): @user_script:149: WRONGTYPE Operation "
                                    "against a key holding the wrong kind of value"), True),
    (dramatiq.errors.ConnectionClosed(pika.exceptions.ChannelClosedByBroker(406, "PRECONDITION_FAILED")), True),
    (dramatiq.errors.ConnectionClosed(pika.exceptions.NackError([])), True),
    # the user may not publish at all, or the broker's own error: every queue alike
    (dramatiq.errors.ConnectionClosed(pika.exceptions.ChannelClosedByBroker(403, "ACCESS_REFUSED")), False),
    (dramatiq.errors.ConnectionClosed(pika.exceptions.ChannelClosedByBroker(541, "INTERNAL_ERROR")), False),
    (dramatiq.errors.ConnectionClosed(pika.exceptions.StreamLostError("lost")), False),
])
def test_which_refusals_are_one_queues(error, one_queue):
    broker = _Refusing(error)
    eu = [SimpleNamespace(**{**vars(j), "queue": "provisioning.eu"}) for j in _jobs(1)]
    sent = dispatch(broker, _jobs(1) + eu)
    assert (sent == [(eu[0].id, 1)]) == one_queue and (dispatch_module.resting_queues(broker) != []) == one_queue
