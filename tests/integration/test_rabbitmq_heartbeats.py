"""hostq's RabbitMQ connections stay open while idle (workers/amqp.py): RabbitMQ never closes them for missed
heartbeats, and the next send reuses them.

A heartbeat of 1 s (the URL's `heartbeat`) makes RabbitMQ close a connection silent for 2 to 3 s: before the fix,
every thread that had sent (an API sender, the scheduler, a worker thread after a retry, a consumer thread that
declared its queue) lost its connection that way between bursts, with two `[error]` lines in RabbitMQ's log.
The connections are asked of RabbitMQ itself (`rabbitmqctl list_connections`), in the run's own vhost.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
import uuid
from dataclasses import replace
from urllib.parse import unquote, urlsplit

import dramatiq
import pytest

from api.dispatch_marks import SENDER_THREADS, BackgroundSender
from domain.jobs.models import Job
from workers.dispatch import make_broker

#: Longer than RabbitMQ takes to close a connection silent under a 1 s heartbeat (2 to 3 s).
IDLE_S = 4.5


@pytest.fixture
def heartbeat_url(amqp_url: str) -> str:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("needs rabbitmqctl to ask RabbitMQ which connections it keeps")
    return amqp_url + ("&" if "?" in amqp_url else "?") + "heartbeat=1"


def _listed(url: str, *columns: str) -> list[list[str]]:
    """`rabbitmqctl list_connections` of the URL's vhost: the columns asked, one list per connection. Filtered on
    the `vhost` column here: some RabbitMQ versions (3.10 on this machine) list every vhost's connections whatever
    `-p` says, and another run's would come and go in the sets compared below."""
    vhost = unquote(urlsplit(url).path.lstrip("/")) or "/"
    out = subprocess.run(["rabbitmqctl", "-q", "--no-table-headers", "list_connections", "vhost", *columns],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    rows = [line.split("\t") for line in out.splitlines() if line.strip()]
    return [row[1:] for row in rows if row[0] == vhost]


def _connections(url: str) -> dict[int, int]:
    """{client port: negotiated heartbeat} of every connection RabbitMQ keeps in the URL's vhost."""
    return {int(port): int(timeout) for port, timeout in _listed(url, "peer_port", "timeout")}


def _message(queue: str) -> dramatiq.Message:
    return dramatiq.Message(queue_name=queue, actor_name="noop", args=(), kwargs={}, options={})


def _in_thread(fn, *args) -> None:
    """Run fn in a thread that ends after it (a worker or consumer thread, as far as its connections go)."""
    errors: list[BaseException] = []

    def run():
        try:
            fn(*args)
        except BaseException as exc:  # re-raised in the test
            errors.append(exc)
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    if errors:
        raise errors[0]


def test_idle_publisher_connections_answer_heartbeats_and_are_reused(settings, heartbeat_url):
    queue = f"hb.{uuid.uuid4().hex[:8]}"
    before = _connections(heartbeat_url)
    broker = make_broker(replace(settings, broker_url=heartbeat_url))
    try:
        broker.enqueue(_message(queue))  # the scheduler's or relay's send, from its loop's thread
        _in_thread(lambda: broker.enqueue(_message(queue), delay=60_000))  # a worker thread's retry
        consumer = None

        def consume():  # a consumer thread declares its queue, then consumes on a connection of its own
            nonlocal consumer
            consumer = broker.consume(queue, prefetch=1, timeout=100)
        _in_thread(consume)
        with_consumer = _connections(heartbeat_url)
        consumer.close()
        ours = set(_connections(heartbeat_url)) - set(before)
        assert set(with_consumer) - set(before) > ours, "the consumer has a connection of its own"
        assert all(with_consumer[port] == 1 for port in set(with_consumer) - set(before)), \
            "every connection keeps its heartbeat (a hung consumer's messages must still come back)"

        time.sleep(IDLE_S)  # idle: a worker thread running a long job, the scheduler between relays
        assert ours <= set(_connections(heartbeat_url)), "RabbitMQ closed an idle publisher connection"
        assert len(ours) == 1, "every send and declaration goes through the broker's one publisher connection"

        broker.enqueue(_message(queue))
        _in_thread(lambda: broker.enqueue(_message(queue)))
        assert set(_connections(heartbeat_url)) - set(before) == ours, "a send after the pause reconnected"
        assert broker.get_queue_message_counts(queue)[:2] == (3, 1)
    finally:
        broker.close()
    assert ours.isdisjoint(_connections(heartbeat_url)), "closing the broker closes its publisher connections"


class _Marks:
    def __init__(self) -> None:
        self.sent: list[tuple[uuid.UUID, int]] = []

    def add(self, tenant_id, sent) -> None:
        self.sent.extend(sent)


def _jobs(queue: str, n: int) -> list[Job]:
    return [Job(id=uuid.uuid4(), tenant_id=None, kind="provision.create", queue=queue, status="queued", round=1,
                max_attempts=6) for _ in range(n)]


async def test_the_api_sender_keeps_its_connections_between_bursts(settings, heartbeat_url):
    queue = f"hb.{uuid.uuid4().hex[:8]}"
    before = _connections(heartbeat_url)
    broker, marks = make_broker(replace(settings, broker_url=heartbeat_url), publishers=SENDER_THREADS), _Marks()
    sender = BackgroundSender(broker, marks)

    async def burst(n: int) -> None:
        for i in range(n):
            sender.submit(_jobs(queue, 1))
        for _ in range(500):
            if len(marks.sent) >= expected:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{len(marks.sent)} of {expected} jobs confirmed")
    try:
        expected = 40
        await burst(40)
        ours = set(_connections(heartbeat_url)) - set(before)
        assert 1 <= len(ours) <= SENDER_THREADS

        await asyncio.sleep(IDLE_S)  # between bursts of orders
        assert ours <= set(_connections(heartbeat_url)), "RabbitMQ closed an idle sender's connection"

        expected = 80
        await burst(40)
        assert set(_connections(heartbeat_url)) - set(before) <= ours, "the next burst reconnected"
    finally:
        await sender.close()
        broker.close()
    assert broker.get_queue_message_counts(queue)[0] == 80


def test_a_publisher_connection_closed_while_idle_is_replaced_at_the_next_send(settings, heartbeat_url):
    queue = f"hb.{uuid.uuid4().hex[:8]}"
    before = _connections(heartbeat_url)
    broker = make_broker(replace(settings, broker_url=heartbeat_url))
    try:
        broker.enqueue(_message(queue))
        (port,) = set(_connections(heartbeat_url)) - set(before)
        (pid,) = [pid for peer_port, pid in _listed(heartbeat_url, "peer_port", "pid") if int(peer_port) == port]
        # as a RabbitMQ restart or an operator would: the idle publisher thread notices and drops it
        subprocess.run(["rabbitmqctl", "-q", "close_connection", pid, "closed by test_rabbitmq_heartbeats"],
                       capture_output=True, timeout=60, check=True)
        time.sleep(1.5)
        broker.enqueue(_message(queue))
        assert broker.get_queue_message_counts(queue)[0] == 2
        assert len(set(_connections(heartbeat_url)) - set(before)) == 1
    finally:
        broker.close()
