"""jobs not yet finished (queued, retrying, running), indexed for the stalled-job sweep

The scheduler now also sends again `running` jobs unchanged for longer than any attempt can run (their
worker and their message lost together, or their outcome never recorded): schedules/clock.py resend_stalled.
This index replaces ix_jobs_waiting (migration 0008) so that the sweep still reads only unfinished rows.

Revision ID: 0010
Revises: 0009
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX ix_jobs_unfinished ON jobs (status) WHERE status IN ('queued', 'retrying', 'running')")
    op.execute("DROP INDEX ix_jobs_waiting")


def downgrade() -> None:
    op.execute("CREATE INDEX ix_jobs_waiting ON jobs (status) WHERE status IN ('queued', 'retrying')")
    op.execute("DROP INDEX ix_jobs_unfinished")
