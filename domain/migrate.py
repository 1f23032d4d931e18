"""`hostq db upgrade`: create the database if it is missing, then apply every migration."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from domain.outages import is_outage
from domain.pg import connect

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str) -> Config:
    """An Alembic config pointing at our migrations and the given database."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


async def create_database_if_missing(database_url: str) -> bool:
    """Create the URL's database when it does not exist; True when it was created."""
    url = make_url(database_url)
    admin = await connect(database_url, database="postgres", timeout=5)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", url.database)
        if exists:
            return False
        name = url.database.replace('"', '""')
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.DuplicateDatabaseError:
            return False
        return True
    finally:
        await admin.close()


async def drop_database(database_url: str) -> None:
    """Drop the URL's database (tests), closing other sessions on it first."""
    url = make_url(database_url)
    admin = await connect(database_url, database="postgres", timeout=5)
    try:
        name = url.database.replace('"', '""')
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def upgrade(database_url: str) -> dict:
    """Create the database if needed and migrate it to the newest revision; what was done, as `hostq db
    upgrade` prints it. A database at a migration this code does not know, one a newer release made (the release
    rolled back), is left as it is, with `"ahead": true`: this code's processes accept it (check_schema)."""
    created = asyncio.run(create_database_if_missing(database_url))
    before = None if created else asyncio.run(_revision_or_none(database_url))
    config = alembic_config(database_url)
    database = make_url(database_url).database
    if before is not None and before not in _known(config):
        return {"database": database, "created": False, "revision_before": before, "revision": before,
                "ahead": True}
    command.upgrade(config, "head")
    return {"database": database, "created": created, "revision_before": before,
            "revision": asyncio.run(_revision(database_url))}


def _known(config: Config) -> set[str]:
    """Every migration revision this code has."""
    return {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}


async def _revision_or_none(database_url: str) -> str | None:
    """The database's revision, or None when it was never migrated."""
    try:
        return await _revision(database_url)
    except asyncpg.UndefinedTableError:
        return None


async def _revision(database_url: str) -> str | None:
    conn = await connect(database_url, timeout=5)
    try:
        return await conn.fetchval("SELECT version_num FROM alembic_version")
    finally:
        await conn.close()


def check_schema(database_url: str) -> str | None:
    """Refuse to start a long-running process (RuntimeError, one line) on a database that does not exist or is
    behind this code's migrations. A database ahead of the code (a release migrated before its old processes
    restarted) is accepted, and so is an unreachable Postgres: the process waits for it like any outage, and
    what the connection failed with is returned for the caller to show (None when the check was made).
    """
    try:
        current = asyncio.run(_revision(database_url))  # a missing database raises as for any command (hostq/cli.py)
    except asyncpg.UndefinedTableError:
        raise RuntimeError("the database is not migrated: run `hostq db upgrade`") from None
    except Exception as exc:  # down, starting or stopping, full (max_connections): domain/outages.py
        if not is_outage(exc):
            raise
        return str(exc) or type(exc).__name__
    config = alembic_config(database_url)
    head = ScriptDirectory.from_config(config).get_current_head()
    if current == head:
        return None
    if current is None or current in _known(config):
        raise RuntimeError(f"the database is at migration {current or 'none'} and this hostq needs {head}: "
                           "run `hostq db upgrade`")
    return None  # ahead of this code
