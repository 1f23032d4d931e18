"""The workers' direct asyncpg pool: system scope, for the statements every job runs.

The ORM costs about a millisecond of CPU per transaction, and a worker's single event loop runs every
job's transactions; the per-job hot path (start an attempt, load the service, store the username, mark it
active, finish the attempt) is plain SQL on this pool instead. Its connections act as the ORM's
`scope="system"` sessions do (domain/db.py): the app role (`hostq_app`, under row-level security) and
`hostq.scope = 'system'`, set once per connection when it opens (domain/pg.py's LazyPool, scope "system").

Opened on first use, in the event loop that uses it (Dramatiq's loop thread in a worker).
"""

from __future__ import annotations

from domain.pg import LazyPool


class SystemPool(LazyPool):
    """An asyncpg pool for platform processes (workers): system scope, made on first use in the running loop."""

    def __init__(self, database_url: str, *, max_size: int) -> None:
        super().__init__(database_url, max_size=max_size, scope="system")
