"""The API's direct asyncpg pool, for the requests that must be cheap (a primary-key read, a one-row insert).

The ORM (domain/db.py) costs about a millisecond of CPU per transaction; a busy API process spends most of
its time there. Hot paths use plain SQL on this pool instead, under the same rules as the ORM's sessions:

- every connection runs as the app role (`hostq_app`: no superuser, no BYPASSRLS), set when it opens;
- `tenant_transaction` sets the tenant for its transaction only (`set_config(..., true)`, i.e. SET LOCAL),
  in the same round trip as its BEGIN;
- `tenant_connection` (single statements, autocommit) sets it on the session, and only when the
  connection last acted for another tenant: every checkout for a tenant goes through one of the two, so a
  connection never carries one tenant's setting into another's request.

The pool is created on first use, in the running event loop, and holds no connection until a request needs
one: a process starts even while Postgres is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import msgspec

from domain.outages import is_outage

APP_ROLE = "hostq_app"
_ACT_FOR = ("SELECT set_config('hostq.tenant_id', $1, false), set_config('hostq.scope', 'tenant', false)")


class TenantConnection(asyncpg.Connection):
    """A pooled connection that remembers which tenant its session acts for."""

    _hostq_tenant: str | None = None

    async def act_for(self, tenant: str) -> None:
        """Make the session see `tenant`'s rows only (one round trip, skipped when it already does)."""
        if self._hostq_tenant != tenant:
            self._hostq_tenant = None  # unknown until the server has answered
            await self.execute(_ACT_FOR, tenant)
            self._hostq_tenant = tenant


_SYSTEM = "SELECT set_config('hostq.tenant_id', '', false), set_config('hostq.scope', 'system', false)"


async def _open_tenant(conn: asyncpg.Connection) -> None:
    """A new connection: the app role, and JSON columns as Python values (as the ORM gives them)."""
    await conn.execute(f"SET ROLE {APP_ROLE}")
    await _json_codecs(conn)


async def _open_system(conn: asyncpg.Connection) -> None:
    """A new connection for platform processes (workers): the app role in system scope, set once for good."""
    await conn.execute(f"SET ROLE {APP_ROLE}; {_SYSTEM}")
    await _json_codecs(conn)


async def _json_codecs(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, schema="pg_catalog", encoder=_encode_json, decoder=msgspec.json.decode)


def _encode_json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset: nothing beyond asyncpg's own rollback of an open transaction.

    The default (RESET ALL ...) would cost a round trip per request and drop the role; what the session
    carries (role, tenant) is re-established on every checkout by `tenant_connection`/`tenant_transaction`
    (tenant scope) or never changes (system scope).
    """


def plain_dsn(database_url: str, *, database: str | None = None) -> str:
    """`postgresql+asyncpg://...` (SQLAlchemy's spelling) as asyncpg takes it, its query (libpq's connection
    options: sslmode, sslrootcert, ...) kept; `database`: another database on the same server."""
    scheme, sep, rest = database_url.partition("://")
    dsn = f"{scheme.split('+', 1)[0]}{sep}{rest}"
    if database is not None:
        parts = urlsplit(dsn)
        dsn = urlunsplit(parts._replace(path="/" + quote(database)))
    return dsn


async def connect(database_url: str, *, database: str | None = None, **options: Any) -> asyncpg.Connection:
    """One asyncpg connection for DATABASE_URL: every path in hostq connects through the same DSN (the ORM's
    engine, the plain pools, migrations), so its connection options mean the same everywhere."""
    return await asyncpg.connect(plain_dsn(database_url, database=database), **options)


#: How long a pooled connection may sit unused before it is closed. A burst opens as many connections as it needs,
#: up to the pool's size; asyncpg's default (300 s) kept them all for five minutes after it, every process's, and a
#: Postgres at max_connections refused psql, `hostq jobs` and a restarted worker meanwhile.
IDLE_CLOSE_S = 60.0


class LazyPool:
    """An asyncpg pool opened on first use, in the event loop that uses it.

    `scope="tenant"` (the API): every checkout goes through tenant_connection/tenant_transaction.
    `scope="system"` (workers): connections act as the ORM's system-scope sessions (domain/db.py), set when
    they open; nothing ever sets a tenant on them.
    """

    def __init__(self, database_url: str, *, max_size: int, scope: str = "tenant",
                 command_timeout_s: float = 30.0, idle_close_s: float = IDLE_CLOSE_S) -> None:
        if scope not in ("tenant", "system"):
            raise ValueError(f"unknown scope {scope!r}")
        self._dsn = plain_dsn(database_url)
        self._max_size, self._command_timeout_s, self._idle_close_s = max_size, command_timeout_s, idle_close_s
        self._init = _open_tenant if scope == "tenant" else _open_system
        self._pool: asyncpg.Pool | None = None
        self._opening: asyncio.Future[asyncpg.Pool] | None = None

    async def get(self) -> asyncpg.Pool:
        """The pool (no connection is opened here)."""
        if self._pool is not None:
            return self._pool
        if self._opening is None:
            self._opening = asyncio.ensure_future(asyncpg.create_pool(
                self._dsn, min_size=0, max_size=self._max_size, init=self._init, reset=_keep_session,
                connection_class=TenantConnection, timeout=5, command_timeout=self._command_timeout_s,
                max_inactive_connection_lifetime=self._idle_close_s,
                server_settings={"application_name": "hostq"}))
        self._pool = await asyncio.shield(self._opening)
        return self._pool

    async def close(self) -> None:
        """Close every connection (waits for checked-out ones up to a few seconds, then terminates)."""
        pool, self._pool, self._opening = self._pool, None, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), 5)
            except TimeoutError:
                pool.terminate()


#: How long a request waits for one of its pool's connections: longer, every connection is most likely held by
#: something that should not hold it, and the request answers 503 (domain/outages.py) rather than wait on.
ACQUIRE_TIMEOUT_S = 10.0


@asynccontextmanager
async def _checked_out(pool: LazyPool) -> AsyncIterator[Any]:
    """One of the pool's connections, waited for at most ACQUIRE_TIMEOUT_S (TimeoutError). asyncio.timeout, not
    asyncpg's own acquire timeout, which wraps every checkout in a task of its own."""
    opened = await pool.get()
    async with asyncio.timeout(ACQUIRE_TIMEOUT_S):
        conn = await opened.acquire()
    try:
        yield conn
    finally:
        await opened.release(conn)


@asynccontextmanager
async def tenant_connection(pool: LazyPool, tenant_id: uuid.UUID) -> AsyncIterator[Any]:
    """A connection whose statements (each its own transaction) see only `tenant_id`'s rows."""
    async with _checked_out(pool) as conn:
        try:
            await conn.act_for(str(tenant_id))
            yield conn
        except BaseException as exc:
            if is_outage(exc):  # closed, not handed back to the pool to be reset by a Postgres that does not answer
                with contextlib.suppress(asyncpg.InterfaceError):
                    conn.terminate()
            raise


@asynccontextmanager
async def tenant_transaction(pool: LazyPool, tenant_id: uuid.UUID) -> AsyncIterator[Any]:
    """One transaction that sees only `tenant_id`'s rows: committed when the block succeeds, else rolled back."""
    async with _checked_out(pool) as conn:
        await begin(conn, tenant_id)
        try:
            yield conn
            await commit(conn)
        except BaseException as exc:
            await rollback(conn, exc)
            raise


async def begin(conn: Any, tenant_id: uuid.UUID, *, then: str = "") -> None:
    """BEGIN a transaction that sees only `tenant_id`'s rows, then run `then`: one
    round trip (simple-query protocol, so `then` must carry its values as literals; the tenant is a UUID,
    rendered by uuid). If `then` fails, the transaction is left aborted: roll it back."""
    await conn.execute(f"BEGIN; SELECT set_config('hostq.tenant_id', '{literal_uuid(tenant_id)}', true), "
                       f"set_config('hostq.scope', 'tenant', true){'; ' + then if then else ''}")


async def commit(conn: Any, *, before: str = "") -> None:
    """Run `before` (literal SQL) and COMMIT, in one round trip; raise if anything failed (nothing committed)."""
    if await conn.execute(f"{before}; COMMIT" if before else "COMMIT") != "COMMIT":
        # An error inside the transaction was swallowed: Postgres answered COMMIT with ROLLBACK.
        raise asyncpg.InFailedSQLTransactionError("the transaction failed and was rolled back")


#: How long a ROLLBACK may take before its connection is closed instead (Postgres drops the transaction with it):
#: after a statement that timed out, Postgres may not answer the ROLLBACK either, and the request would wait again.
ROLLBACK_TIMEOUT_S = 2.0


async def rollback(conn: Any, after: BaseException | None = None) -> None:
    """Roll back the connection's open transaction, if any; never raises, so the error that led here is the one
    reported. Nothing to do on a broken connection, or one asyncpg has already closed (it then detaches it from its
    pool). `after`, the error that led here: when it says Postgres is out of reach (a statement timed out), the
    connection is closed at once, its transaction with it, rather than asking a Postgres that does not answer."""
    try:
        if conn.is_closed() or not conn.is_in_transaction():
            return
        if after is None or not is_outage(after):
            await conn.execute("ROLLBACK", timeout=ROLLBACK_TIMEOUT_S)
            return
    except asyncpg.InterfaceError:  # closed (and detached) by asyncpg meanwhile
        return
    except Exception:
        pass
    with contextlib.suppress(asyncpg.InterfaceError):
        conn.terminate()


async def rollback_to(conn: Any, savepoint: str, after: BaseException) -> bool:
    """Undo what the open transaction did since `savepoint` (after `after`, the error that stopped it), keeping
    what it did before; False, having done nothing, when that cannot be done: no transaction open, Postgres out of
    reach, the connection broken (then roll the whole transaction back: `rollback`)."""
    if conn.is_closed() or not conn.is_in_transaction() or is_outage(after):
        return False
    try:
        await conn.execute(f"ROLLBACK TO SAVEPOINT {savepoint}", timeout=ROLLBACK_TIMEOUT_S)
    except Exception:  # whatever it was, the caller falls back to rolling everything back
        return False
    return True


def literal_uuid(value: uuid.UUID | str) -> str:
    """`value` as the text of a UUID (a str is parsed first, so it cannot carry anything else)."""
    return str(value if isinstance(value, uuid.UUID) else uuid.UUID(value))


def literal_text(value: str) -> str:
    """`value` as a SQL expression that cannot break out of its quotes: hex of its UTF-8 bytes."""
    return f"convert_from(decode('{value.encode().hex()}', 'hex'), 'UTF8')"


def literal_bytes(value: bytes) -> str:
    """`value` as a bytea SQL expression (hex)."""
    return f"decode('{value.hex()}', 'hex')"


class Row:
    """Attribute access to a record's columns, so API schemas read it as they read an ORM row."""

    __slots__ = ("_record",)

    def __init__(self, record: asyncpg.Record) -> None:
        self._record = record

    def __getattr__(self, name: str) -> Any:
        try:
            return self._record[name]
        except KeyError:
            raise AttributeError(name) from None
