"""The one line `hostq` prints for a database error (hostq/cli.py, _database_problem)."""

import asyncpg
from sqlalchemy.exc import DBAPIError

from hostq.cli import _database_problem


def test_the_app_role_missing_means_the_database_is_not_migrated():
    """A new Postgres has no `hostq_app` (the first migration makes it): a command on a database never migrated
    said 'database error: role "hostq_app" does not exist', not what to do."""
    missing = asyncpg.UndefinedObjectError('role "hostq_app" does not exist')
    wrapped = DBAPIError("SET ROLE hostq_app", None, missing)
    for error in (missing, wrapped):
        assert _database_problem(error) == ('role "hostq_app" does not exist: the database is not migrated; run '
                                            "`hostq db upgrade`")


def test_another_missing_object_stays_a_database_error():
    assert _database_problem(asyncpg.UndefinedObjectError('role "someone" does not exist')) == (
        'database error: role "someone" does not exist')
