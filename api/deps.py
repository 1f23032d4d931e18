"""The request's database access: commit on success, roll back on error, then dispatch its jobs.

Two kinds, one contract: `session` (the ORM, for most handlers) and `db_for(request)` (a plain asyncpg
connection from domain/pg.py, for the hot paths). A GET reads without a transaction; any other method gets one transaction,
in which the request's idempotency claim is marked committed with its effect (an unkeyed one-statement write on
db_for is that transaction by itself). Jobs recorded in it reach the broker only once it has committed
(api/dispatch_marks.py): a `session` handler's are taken from the session, a `db_for` handler hands its own
to `after_commit`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from api import dispatch_marks
from api.auth import principal
from api.request_ids import request_id
from api.idempotency import CLAIM_KEY, CONNECTION_KEY, EFFECT_SAVEPOINT, IN_TRANSACTION, ON_DB_OPT
from domain.errors import Conflict
from domain.idempotency.service import CLAIM_LOST, commit_claim_sql
from domain.jobs.service import take_outbox
from domain.pg import rollback, rollback_to, tenant_connection, tenant_transaction
from domain.settings import Settings
from domain.tenants.service import Principal

_TAKEN_OVER = "this request's Idempotency-Key was taken over after its lock expired"


async def provide_session(request: Request) -> AsyncGenerator[AsyncSession, None]:
    """One transaction per request; jobs recorded in it reach the broker only after it commits."""
    resources = request.app.state.resources
    if request.method == "GET":  # reads only: no transaction to open and close around them
        async with resources.read_sessions() as session:
            yield session
        return
    claim = request.scope.get(CLAIM_KEY)  # type: ignore[call-overload]
    async with resources.sessions() as session:
        async with session.begin():
            yield session
            # The idempotency claim commits with the effect, or the effect does not commit at all.
            if claim is not None:
                try:
                    await (await session.connection()).exec_driver_sql(commit_claim_sql(claim))
                except DBAPIError as exc:  # hostq_commit_idempotency_claim: the claim was taken over
                    if getattr(exc.orig, "sqlstate", None) == CLAIM_LOST:
                        raise Conflict(_TAKEN_OVER) from exc
                    raise
        jobs = take_outbox(session)
    if jobs:
        dispatch_marks.send(resources, jobs)


#: `opt` of a route whose handler uses db_for: a keyed POST then runs inside the idempotency middleware's
#: transaction (api/idempotency.py).
ON_DB = {ON_DB_OPT: True}


@asynccontextmanager
async def db_for(request: Request, *, one_statement: bool = False) -> AsyncIterator[Any]:
    """The caller's tenant on a plain asyncpg connection: autocommit for a GET, else one transaction.

    `one_statement`: the handler writes with a single statement, a transaction on its own, so an unkeyed
    request runs it in autocommit as a GET does: one round trip instead of three (BEGIN, the statement, COMMIT);
    an exception raised after it cannot undo it, and its jobs are then left to the relay. A keyed request runs
    in the idempotency middleware's transaction either way.
    Jobs recorded by the handler go to `after_commit(request, jobs)` inside the block: they are sent once its
    writes commit (here for an unkeyed request, in the idempotency middleware for a keyed one), never if they
    roll back.
    Not a Litestar dependency: resolving one and closing it costs a hot route more than its query.
    """
    if request.method == "GET":
        async with tenant_connection(request.app.state.resources.pg, principal(request).tenant_id) as conn:
            yield conn
        return
    if request.scope.get(IN_TRANSACTION):  # type: ignore[call-overload]
        # The idempotency middleware's transaction, which already holds the claim and commits with the answer.
        held = request.scope[CONNECTION_KEY]  # type: ignore[literal-required]
        try:
            yield held
        except BaseException as exc:
            # Undo the effect, keeping the claim, which commits with this answer (a 4xx) or rolls back (a 5xx).
            # If only everything can be undone, the middleware claims the key again to store the answer.
            dispatch_marks.discard(request.scope)
            if not await rollback_to(held, EFFECT_SAVEPOINT, exc):
                request.scope[IN_TRANSACTION] = False  # type: ignore[literal-required]
                await rollback(held, exc)
            raise
        return
    scoped = tenant_connection if one_statement else tenant_transaction
    try:
        async with scoped(request.app.state.resources.pg, principal(request).tenant_id) as conn:
            yield conn
    except BaseException:
        dispatch_marks.discard(request.scope)
        raise
    dispatch_marks.send_committed(request.scope)


def after_commit(request: Request, jobs: list) -> None:
    """Send these jobs, recorded on db_for's connection, once the request's transaction commits."""
    dispatch_marks.after_commit(request.scope, jobs)


async def provide_principal(request: Request) -> Principal:
    """The authenticated caller."""
    return principal(request)


async def provide_request_id(request: Request) -> str:
    """This request's id, carried into the jobs it causes."""
    return request_id(request.scope)


async def provide_settings(request: Request) -> Settings:
    """The process's settings."""
    return request.app.state.resources.settings
