"""What an exception says about hostq's own dependencies: Postgres or Redis out of reach (down, restarting,
refusing connections, answering too late) is an outage, not a bug, and nobody's request or job is at fault.

The API answers such a failure with 503 (api/problems.py); a worker logs it in one line and lets the message be
retried (workers/middleware.py); a job's attempt that meets it is `dependency_unavailable` (domain/jobs/tracking.py).
"""

from __future__ import annotations

import asyncpg
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

_OUTAGE = (OperationalError, InterfaceError, PoolTimeout, RedisConnectionError, RedisTimeoutError, OSError,
           TimeoutError,
           # The plain asyncpg pools of the hot paths (domain/pg.py): lost connection, server shutting down.
           asyncpg.PostgresConnectionError, asyncpg.exceptions.ConnectionDoesNotExistError,
           asyncpg.exceptions.OperatorInterventionError,
           asyncpg.exceptions.InsufficientResourcesError)  # e.g. Postgres's max_connections reached

#: What, wrapped in another error (SQLAlchemy wraps asyncpg's in its own), still says Postgres is out of reach: not
#: a statement cancelled by a timeout (a slow query is a bug to see, not a dependency down).
_OUTAGE_WRAPPED = (OSError, asyncpg.PostgresConnectionError, asyncpg.exceptions.ConnectionDoesNotExistError,
                   asyncpg.exceptions.TooManyConnectionsError, asyncpg.exceptions.CannotConnectNowError,
                   asyncpg.exceptions.AdminShutdownError, asyncpg.exceptions.CrashShutdownError)


def is_outage(exc: BaseException) -> bool:
    """Whether `exc`, or what it wraps (Postgres refusing a connection at max_connections, say), says a dependency
    is out of reach."""
    if isinstance(exc, _OUTAGE) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
        return True
    seen = getattr(exc, "orig", None) or exc.__cause__
    for _ in range(3):
        if seen is None:
            return False
        if isinstance(seen, _OUTAGE_WRAPPED):
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


def describe(exc: BaseException) -> str:
    """`Type: message` for a log line, without an empty message (a bare TimeoutError has none). An error SQLAlchemy
    wrapped is named by what it wraps (its asyncpg error), on one line: SQLAlchemy's own text adds the DBAPI
    adapter's class, a second line pointing at its docs and, for a statement, the SQL."""
    shown = exc
    while isinstance(shown, SQLAlchemyError) and (inner := getattr(shown, "orig", None)) is not None:
        # SQLAlchemy's error -> its DBAPI adapter's -> asyncpg's, which caused it
        shown = inner.__cause__ if isinstance(inner.__cause__, (asyncpg.PostgresError, OSError)) else inner
    said = str(shown).strip()
    return f"{type(shown).__name__}: {said.splitlines()[0]}" if said else type(shown).__name__
