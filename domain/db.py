"""The database: engine, sessions, the declarative base, and session_scope for jobs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import datetime, timezone

import asyncpg
from sqlalchemy import DateTime, MetaData, event, func
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from domain.ids import new_id
from domain.pg import connect

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    """Every table: a UUIDv7 primary key and a creation time."""

    metadata = MetaData(naming_convention=NAMING)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_id)
    # Set in Python too, so a new row's created_at is known without reading it back.
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), default=_utcnow)


#: The tenant whose rows this request may see (set by the API's authentication, per request task).
CURRENT_TENANT: ContextVar[str] = ContextVar("hostq_tenant", default="")
APP_ROLE = "hostq_app"


def make_engine(database_url: str, *, pool_size: int = 10, scope: str = "system",
                max_overflow: int | None = None, command_timeout_s: float = 30.0) -> AsyncEngine:
    """An asyncpg engine whose sessions run as the app role, under row-level security.

    `scope="tenant"` (the API): each checkout sees only CURRENT_TENANT's rows, none when unset.
    `scope="system"` (workers, scheduler, CLI): platform processes that act by job id across tenants.
    Short connect and statement timeouts, so a dead database answers instead of hanging.
    """
    if scope not in ("tenant", "system"):
        raise ValueError(f"unknown scope {scope!r}")
    engine = create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
        pool_timeout=5,
        pool_pre_ping=False,
        # Through domain.pg.connect, as the plain pools connect: DATABASE_URL's options (sslmode, ...) are libpq's
        # on every path, where SQLAlchemy would hand them to asyncpg.connect as arguments.
        async_creator=lambda: connect(database_url, timeout=5, command_timeout=command_timeout_s,
                                      server_settings={"application_name": "hostq"}),
    )

    # Both run on the raw asyncpg connection, outside any transaction: a SET inside the driver's
    # implicit transaction would be undone by the first rollback, and the session would run as the
    # (superuser) login role, which bypasses row-level security.
    @event.listens_for(engine.sync_engine, "connect")
    def _as_app_role(dbapi_connection, _record) -> None:
        # A superuser bypasses row-level security; hostq_app (created by the migrations) does not.
        dbapi_connection.run_async(lambda raw: raw.execute(f"SET ROLE {APP_ROLE}"))

    # A pooled connection that Postgres closed while it sat idle (a restart, a failover, an admin's
    # pg_terminate_backend) is replaced at checkout: DisconnectionError makes the pool discard it and check out
    # another, up to three times, instead of the request failing on it. asyncpg notices a closed socket at once
    # (is_closed), so this costs no round trip; a connection lost between the check and its first statement is
    # still an error (503 at the API) and is then discarded.
    @event.listens_for(engine.sync_engine, "checkout")
    def _scope(dbapi_connection, record, _proxy) -> None:
        if dbapi_connection.driver_connection.is_closed():
            raise DisconnectionError("the database closed this pooled connection")
        tenant = CURRENT_TENANT.get() if scope == "tenant" else ""
        if record.info.get("hostq.scope") == (tenant, scope):
            return  # this connection already acts for that tenant: spare the round trip
        try:
            dbapi_connection.run_async(lambda raw: raw.execute(
                "SELECT set_config('hostq.tenant_id', $1, false), set_config('hostq.scope', $2, false)",
                tenant, scope))
        except (asyncpg.InterfaceError, asyncpg.PostgresConnectionError, OSError) as exc:
            if dbapi_connection.driver_connection.is_closed():
                raise DisconnectionError(f"the database closed this pooled connection: {exc}") from exc
            raise
        record.info["hostq.scope"] = (tenant, scope)

    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def session_scope(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One transaction: commit when the block succeeds, roll back when it raises."""
    async with sessions() as session, session.begin():
        yield session
