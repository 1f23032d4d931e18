"""Alembic environment: async, online only; the URL comes from the caller's config."""

import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from domain.models import Base
from domain.pg import connect

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    url = config.get_main_option("sqlalchemy.url")
    # As every hostq connection is made (domain.pg.connect): the URL's options are libpq's.
    engine = create_async_engine(url, async_creator=lambda: connect(url, timeout=5))
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


asyncio.run(_main())
