"""The request's database session: commit on success, roll back on error, then dispatch its jobs."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from litestar import Request
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import principal
from api.request_ids import request_id
from api.idempotency import CLAIM_KEY
from domain.errors import Conflict
from domain.idempotency.service import mark_committed
from domain.jobs.service import take_outbox
from domain.settings import Settings
from domain.tenants.service import Principal
from workers.dispatch import dispatch


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
            if claim is not None and not await mark_committed(session, claim):
                raise Conflict("this request's Idempotency-Key was taken over after its lock expired")
        jobs = take_outbox(session)
    if jobs:
        sent = dispatch(resources.broker, jobs)
        if sent:
            resources.marks.add(jobs[0].tenant_id, sent)


async def provide_principal(request: Request) -> Principal:
    """The authenticated caller."""
    return principal(request)


async def provide_request_id(request: Request) -> str:
    """This request's id, carried into the jobs it causes."""
    return request_id(request.scope)


async def provide_settings(request: Request) -> Settings:
    """The process's settings."""
    return request.app.state.resources.settings
