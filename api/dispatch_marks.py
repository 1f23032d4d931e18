"""A request's jobs after its commit: sent to the broker, then marked dispatched in batches (one UPDATE per tenant
every few milliseconds, not one per request).

The ORM path (api.deps.provide_session) takes its jobs from the session once it has committed. On the asyncpg
path the handler hands them to `after_commit` (the request scope holds them) and whoever commits the request's
transaction calls `send_committed` right after its COMMIT succeeded: api.deps.db_for for an unkeyed request,
the idempotency middleware for a keyed one (with the stored answer). A transaction that rolls back sends
nothing (`discard`); a crash between the COMMIT and the send leaves the jobs undispatched for the relay.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import MutableMapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.db import CURRENT_TENANT, session_scope
from domain.jobs.models import Job
from domain.jobs.service import mark_dispatched
from workers.dispatch import dispatch, outgoing, send_messages

log = logging.getLogger("hostq.api")
FLUSH_AFTER_S = 0.05
#: Scope key of the jobs recorded by a request's asyncpg transaction, waiting for its COMMIT.
OUTBOX_KEY = "hostq.outbox"


def after_commit(scope: MutableMapping[str, Any], jobs: Sequence[Job]) -> None:
    """Send these jobs (recorded in the request's transaction) once that transaction commits; never if it does not."""
    scope.setdefault(OUTBOX_KEY, []).extend(jobs)


def discard(scope: MutableMapping[str, Any]) -> None:
    """The request's transaction rolled back: its jobs were never recorded, so nothing is sent."""
    scope.pop(OUTBOX_KEY, None)


def send_committed(scope: MutableMapping[str, Any]) -> None:
    """Send the jobs of the request's transaction, which has just committed (then the outbox is empty)."""
    jobs = scope.pop(OUTBOX_KEY, None)
    if jobs:
        send(scope["litestar_app"].state.resources, jobs)


def send(resources: Any, jobs: Sequence[Job]) -> None:
    """Enqueue committed jobs; the ones that reached the broker are marked dispatched soon after (the relay sends
    the others)."""
    if resources.sender is not None:
        resources.sender.submit(jobs)
        return
    sent = dispatch(resources.broker, jobs)
    if sent:
        resources.marks.add(jobs[0].tenant_id, sent)


#: Threads an API process sends from, and its broker's publisher threads (a RabbitMQ connection each,
#: workers/amqp.py); measured: 1 -> 4 took end to end on RabbitMQ from ~212 to ~275 jobs/s
#: (bench_provisioning.py --broker rabbitmq), as fast as the orders came in.
SENDER_THREADS = 4


class BackgroundSender:
    """Sends jobs from a thread of its own, for a broker whose every send waits on the network.

    RabbitMQ's publisher confirms (workers/dispatch.py) take a round trip per message, and pika's connection
    blocks while it waits: on the event loop, every other request would wait too (and all of them for its
    timeouts if RabbitMQ hangs). Here the request goes on at once; the jobs are marked dispatched once
    confirmed, and those a crash or an outage keeps from being sent wait for the relay, as on any failed send.
    The sends run on the broker's SENDER_THREADS publisher threads (workers/amqp.py), each on a connection of its
    own that it keeps open between bursts, waiting for their confirmations side by side: with one, the sends fell
    behind a burst of orders. Jobs are independent, so their messages need not reach the queue in the order they
    were accepted.
    """

    def __init__(self, broker: Any, marks: DispatchMarks) -> None:
        self._broker, self._marks = broker, marks
        self._pending: set[asyncio.Future] = set()

    def submit(self, jobs: Sequence[Job]) -> None:
        """Send these committed jobs soon (messages are made here, from the rows as the request left them)."""
        tenant_id = jobs[0].tenant_id
        future = asyncio.wrap_future(self._broker.submit(send_messages, self._broker, outgoing(jobs)))
        self._pending.add(future)
        future.add_done_callback(lambda done: self._sent(done, tenant_id))

    def _sent(self, done: asyncio.Future, tenant_id: uuid.UUID | None) -> None:
        self._pending.discard(done)
        if done.cancelled() or done.exception() is not None:
            return  # send_messages catches the broker's errors; anything else leaves the jobs to the relay
        if done.result():
            self._marks.add(tenant_id, done.result())

    async def close(self) -> None:
        """Finish the sends under way (their marks then go with the last flush)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


class DispatchMarks:
    """Collects the ids of jobs whose message reached the broker and writes them soon after.

    Losing a batch (crash, database down) is harmless: those jobs stay undispatched in Postgres,
    the relay sends them again, and the job middleware skips a delivery whose job already ran.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._pending: dict[str, list[tuple[uuid.UUID, int]]] = defaultdict(list)
        self._flusher: asyncio.Task | None = None

    def add(self, tenant_id: uuid.UUID | None, sent: list[tuple[uuid.UUID, int]]) -> None:
        """Queue these (job id, round) pairs for the next flush."""
        self._pending[str(tenant_id or "")].extend(sent)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        # Marks added while a flush is writing find this task still running (add starts no other): they get a
        # turn of their own, instead of waiting for the next order (and the relay sending their jobs again).
        while self._pending:
            await asyncio.sleep(FLUSH_AFTER_S)
            await self.flush()

    async def flush(self) -> None:
        """Write every pending mark now, tenant by tenant (the API's sessions see one tenant at a time)."""
        pending, self._pending = self._pending, defaultdict(list)
        for tenant, ids in pending.items():
            token = CURRENT_TENANT.set(tenant)
            try:
                async with session_scope(self._sessions) as session:
                    await mark_dispatched(session, ids)
            except Exception as exc:  # the relay covers it
                log.warning("could not mark %d job(s) dispatched: %s", len(ids), exc)
            finally:
                CURRENT_TENANT.reset(token)

    async def close(self) -> None:
        """Flush what is left (at shutdown)."""
        if self._flusher is not None:
            self._flusher.cancel()
        await self.flush()
