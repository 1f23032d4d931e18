"""The relay also sends retrying jobs whose message a broker refused

A worker that could not send a message back to the broker (a retry's, or one that came before its service was
free or its attempt was due) could only hand a queued job to the relay; a retrying one waited for the stalled-job
sweep (HOSTQ_RESEND_STALLED_S, 10 minutes by default). Such a job is now marked unsent too, and the relay sends it
for when its next attempt is due: its partial index covers retrying jobs as well.

Built CONCURRENTLY under another name, then swapped in, so that a large jobs table keeps taking writes (orders,
attempts) while the index is built.

Revision ID: 0013
Revises: 0012
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def _index(statuses: str) -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_jobs_undispatched_next")  # an earlier, interrupted run's
        op.execute("CREATE INDEX CONCURRENTLY ix_jobs_undispatched_next ON jobs (created_at) "
                   f"WHERE dispatched_at IS NULL AND status IN {statuses}")
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_jobs_undispatched")
        op.execute("ALTER INDEX ix_jobs_undispatched_next RENAME TO ix_jobs_undispatched")


def upgrade() -> None:
    _index("('queued', 'retrying')")


def downgrade() -> None:
    _index("('queued')")
