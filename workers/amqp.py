"""RabbitMQ as Dramatiq's broker, its sends made from threads of the broker's own that keep their connections alive.

Dramatiq's RabbitmqBroker publishes (and declares queues) on a pika BlockingConnection of the calling thread's own,
kept in `broker.state` for the thread's next send. pika answers RabbitMQ's heartbeats only while that thread calls
into its connection, and the threads that send are mostly busy with something else or asleep: an API sender between
bursts of orders, a worker thread that sent a retry and then runs jobs (a createacct may take minutes), a consumer
thread that declared its queue, the scheduler between relays. RabbitMQ then closed their connections for missed
heartbeats, two `[error]` lines in its log each time, and the next send paid for a new connection.

Here every publish and queue declaration runs on one of the broker's publisher threads (`publishers` of them,
started on first use): the calling thread hands the call over and waits for its outcome (the same result or
exception as Dramatiq's own, so its retries and hostq's handling of refusals are unchanged). A publisher thread does
nothing else, so whenever no call is waiting it lets its connection answer RabbitMQ's heartbeats and send its own
(`process_data_events(time_limit=0)`, every TEND_EVERY_S): an idle connection stays open, and one RabbitMQ or the
network closed is found and dropped then, the next send opening another. Each connection is only ever used by the
thread that opened it. Consumers keep their own connections (Dramatiq's, serviced by their consumer threads), with
their heartbeats: a worker that hangs still loses its unacknowledged messages after two missed heartbeats.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable

import pika.exceptions
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.errors import ConnectionClosed
from pika.adapters.utils.connection_workflow import AMQPConnectorException

log = logging.getLogger("hostq.dispatch")

#: How often an idle publisher thread services its connection. pika sends a heartbeat every half of the negotiated
#: timeout once its timer is due, and RabbitMQ closes a connection silent for two timeouts: servicing it every
#: second keeps it open for any heartbeat of a second or more (RabbitMQ's default is 60 s).
TEND_EVERY_S = 1.0
#: How long closing the broker waits for each publisher thread to finish the call it is making and close.
CLOSE_WAIT_S = 10.0

_AMQP_ERRORS = (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError)


class HostqRabbitmqBroker(RabbitmqBroker):
    """Dramatiq's RabbitmqBroker whose publishes and queue declarations run on `publishers` threads of its own."""

    def __init__(self, *, publishers: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if publishers < 1:
            raise ValueError("publishers must be at least 1")
        self.publishers = publishers
        self._on_publisher = threading.local()  # .yes in the broker's publisher threads
        self._pool_lock = threading.Lock()
        self._calls: queue.SimpleQueue | None = None
        self._threads: list[threading.Thread] = []
        self._pool_pid: int | None = None

    @property
    def connection(self):
        """Dramatiq's connection of this thread. pika lets a handshake that times out (a server that accepts the
        connection and never answers) escape as its AMQPConnectorStackTimeout, which neither Dramatiq nor hostq takes
        for a connection error: it is one here, as a refused connection is."""
        try:
            return RabbitmqBroker.connection.fget(self)
        except AMQPConnectorException as exc:
            raise pika.exceptions.AMQPConnectionError(exc) from exc

    @connection.deleter
    def connection(self):
        RabbitmqBroker.connection.fdel(self)

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000):
        """Dramatiq's, with a consumer's handshake that times out (see `connection`) a connection error: its consumer
        thread logs one line and tries again a second later, as for a refused connection, not a traceback."""
        try:
            return super().consume(queue_name, prefetch, timeout)
        except AMQPConnectorException as exc:
            raise ConnectionClosed(exc) from None

    @property
    def channel(self):
        """In a publisher thread, its own channel (Dramatiq's); in any other thread, a stand-in whose calls
        (basic_publish, queue_declare, queue_purge) a publisher thread makes on its channel."""
        if getattr(self._on_publisher, "yes", False):
            return RabbitmqBroker.channel.fget(self)
        return _HandedOverChannel(self)

    @channel.deleter
    def channel(self):
        # Dramatiq drops the calling thread's channel and connection after a failed publish: a publisher thread
        # has already dropped its own (in _channel_call); another thread has none.
        if getattr(self._on_publisher, "yes", False):
            RabbitmqBroker.channel.fdel(self)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run fn(*args) on a publisher thread, where `channel` is that thread's own: a batch of sends (the API's
        BackgroundSender) runs there whole, with no hand-over per message. Its Future."""
        future: Future = Future()
        self._pool().put((future, fn, args))
        return future

    def call_on_publisher(self, name: str, args: tuple, kwargs: dict) -> Any:
        """Call the channel's method `name` on a publisher thread's channel; its result, or its exception. Only
        from another thread (`channel` is the publisher thread's own there)."""
        return self.submit(self._channel_call, name, args, kwargs).result()

    def _channel_call(self, name: str, args: tuple, kwargs: dict) -> Any:
        try:
            return getattr(RabbitmqBroker.channel.fget(self), name)(*args, **kwargs)
        except _AMQP_ERRORS:  # as Dramatiq does: the next call opens new ones
            RabbitmqBroker.connection.fdel(self)
            raise

    def _pool(self) -> queue.SimpleQueue:
        with self._pool_lock:
            if self._calls is None or self._pool_pid != os.getpid():  # first use, or a process forked since
                self._calls, self._pool_pid = queue.SimpleQueue(), os.getpid()
                self._threads = [threading.Thread(target=self._serve, args=(self._calls,), daemon=True,
                                                  name=f"hostq-publish_{i}") for i in range(self.publishers)]
                for thread in self._threads:
                    thread.start()
            return self._calls

    def _serve(self, calls: queue.SimpleQueue) -> None:
        """A publisher thread: make the calls handed over, and service the connection between them."""
        self._on_publisher.yes = True
        try:
            while True:
                try:
                    call = calls.get(timeout=TEND_EVERY_S)
                except queue.Empty:
                    self._tend()
                    continue
                if call is None:
                    return
                future, fn, args = call
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    result = fn(*args)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
        finally:
            RabbitmqBroker.connection.fdel(self)

    def _tend(self) -> None:
        """Let this thread's idle connection (if it has one) answer and send heartbeats; drop it when it is closed."""
        connection = getattr(self.state, "connection", None)
        if connection is None:
            return
        try:
            if connection.is_open:
                connection.process_data_events(time_limit=0)
                return
        except Exception as exc:  # RabbitMQ closed it (a restart, an operator) or the network dropped it
            log.debug("an idle RabbitMQ publisher connection was closed (%r): the next send opens another", exc)
        RabbitmqBroker.connection.fdel(self)

    def close(self) -> None:
        """Stop the publisher threads (each closes its own connection once its calls are made), then whatever else
        Dramatiq holds."""
        with self._pool_lock:
            calls, threads, pid = self._calls, self._threads, self._pool_pid
            self._calls, self._threads = None, []
        if calls is not None and pid == os.getpid():
            for _ in threads:
                calls.put(None)
            for thread in threads:
                thread.join(CLOSE_WAIT_S)
            if any(thread.is_alive() for thread in threads):  # its connection is its own: left to the exit
                log.warning("a RabbitMQ publisher thread is still sending after %.0f s: not waiting for it",
                            CLOSE_WAIT_S)
                return
        super().close()


class _HandedOverChannel:
    """What `broker.channel` is outside the publisher threads: each method call is made by a publisher thread."""

    __slots__ = ("_broker",)

    def __init__(self, broker: HostqRabbitmqBroker) -> None:
        self._broker = broker

    def __getattr__(self, name: str):
        def call(*args: Any, **kwargs: Any) -> Any:
            return self._broker.call_on_publisher(name, args, kwargs)
        return call
