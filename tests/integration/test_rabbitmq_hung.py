"""A RabbitMQ that accepts connections and never answers (hung, or something else on its port): a connection error
like a refused one, never a traceback (found by an acceptance pass: `hostq api`, `worker` and `scheduler` crashed at
start with pika's AMQPConnectorStackTimeout, and a worker's consumer logged a traceback at every retry)."""

from __future__ import annotations

import socket
import threading

import dramatiq
import pytest
from dramatiq.errors import ConnectionClosed

from domain.settings import load_settings
from hostq.cli import _check_rabbitmq
from workers.amqp import HostqRabbitmqBroker


@pytest.fixture
def hung_port():
    """A port that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def _url(port: int) -> str:
    return f"amqp://guest:guest@127.0.0.1:{port}/hung?connection_attempts=1&socket_timeout=1&stack_timeout=1"


def test_a_consumer_on_a_hung_rabbitmq_gets_a_connection_error(hung_port):
    broker = HostqRabbitmqBroker(url=_url(hung_port), confirm_delivery=True, middleware=[])
    try:
        with pytest.raises(ConnectionClosed):  # Dramatiq's consumer thread: one line, and again a second later
            broker.consume("provisioning")
    finally:
        broker.close()


def test_a_send_to_a_hung_rabbitmq_is_a_connection_error(hung_port):
    broker = HostqRabbitmqBroker(url=_url(hung_port), confirm_delivery=True, middleware=[])
    try:
        broker.declare_queue("provisioning")
        with pytest.raises(ConnectionClosed):  # after Dramatiq's own attempts: the relay sends the job later
            broker.enqueue(dramatiq.Message(queue_name="provisioning", actor_name="noop", args=(), kwargs={},
                                            options={}))
    finally:
        broker.close()


def test_the_start_up_check_warns_of_a_hung_rabbitmq_and_lets_the_process_start(hung_port, test_env, capsys):
    settings = load_settings({**test_env, "HOSTQ_BROKER_URL": _url(hung_port)})
    _check_rabbitmq(settings)  # no exception: the process starts and waits for it
    said = capsys.readouterr().err
    assert said.startswith("hostq: warning: RabbitMQ cannot be reached (AMQPConnectorStackTimeout(") and \
        "starting anyway" in said, said
