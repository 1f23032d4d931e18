"""jobs waiting for a delivery (queued or retrying), indexed for the relay's stalled-job sweep

The scheduler re-sends jobs whose message the broker should have delivered long ago (schedules/clock.py,
resend_stalled). A partial index keeps that sweep to the few waiting rows instead of the whole table; a job
enters it once (queued) and leaves when it starts.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX ix_jobs_waiting ON jobs (status) WHERE status IN ('queued', 'retrying')")


def downgrade() -> None:
    op.execute("DROP INDEX ix_jobs_waiting")
