"""A tenant's lists read its own rows in order: (tenant_id, id) indexes

`GET /v1/services`, `/v1/customers` and `/v1/jobs` page a tenant's rows newest first (`WHERE tenant_id = $1 ORDER BY
id DESC LIMIT n`, keyset on id). With an index on tenant_id alone, Postgres either read all the tenant's rows and
sorted them on every page, or walked the primary key backwards past every other tenant's newer rows: for a tenant
whose rows are old (one that stopped ordering a while ago) that was the whole table (measured on 2M rows: 420 ms a
page, and it grows with the table, towards the API's 10 s statement limit). An index on (tenant_id, id) reads just
the page. For services and customers it replaces the tenant_id index, which it also serves (the foreign key's
look-ups, row-level security); for jobs it is new (ix_jobs_tenant_status serves the lists filtered by status).

Built CONCURRENTLY, the replaced ones under another name and then swapped in, so that large tables keep taking
writes while they are built.

Revision ID: 0015
Revises: 0014
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def _swap(table: str, columns: str) -> None:
    """ix_<table>_tenant_id rebuilt on `columns`."""
    name = f"ix_{table}_tenant_id"
    op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}_next")  # an earlier, interrupted run's
    op.execute(f"CREATE INDEX CONCURRENTLY {name}_next ON {table} ({columns})")
    op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
    op.execute(f"ALTER INDEX {name}_next RENAME TO {name}")


def upgrade() -> None:
    with op.get_context().autocommit_block():
        _swap("services", "tenant_id, id")
        _swap("customers", "tenant_id, id")
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_jobs_tenant_id")  # an earlier, interrupted run's
        op.execute("CREATE INDEX CONCURRENTLY ix_jobs_tenant_id ON jobs (tenant_id, id)")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_jobs_tenant_id")
        _swap("customers", "tenant_id")
        _swap("services", "tenant_id")
