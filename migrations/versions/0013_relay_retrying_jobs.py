"""The relay also sends retrying jobs whose message a broker refused

A worker that could not send a message back to the broker (a retry's, or one that came before its service was
free or its attempt was due) could only hand a queued job to the relay; a retrying one waited for the stalled-job
sweep (HOSTQ_RESEND_STALLED_S, 10 minutes by default). Such a job is now marked unsent too, and the relay sends it
for when its next attempt is due: its partial index covers retrying jobs as well.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def _index(statuses: str) -> None:
    op.drop_index("ix_jobs_undispatched", table_name="jobs")
    op.create_index("ix_jobs_undispatched", "jobs", ["created_at"],
                    postgresql_where=sa.text(f"dispatched_at IS NULL AND status IN {statuses}"))


def upgrade() -> None:
    _index("('queued', 'retrying')")


def downgrade() -> None:
    _index("('queued')")
