"""Each attempt names the worker process that runs it

A message of a job already `running` comes back when that attempt's worker died (its message redelivered), and
the new delivery closes the old attempt as `worker_lost`. The service's lock told the two cases apart: a live
worker's lock is held, so the delivery waits. But a lock can vanish with its worker alive (its Redis key deleted,
or Redis restarted without its data) while a duplicate message is around (the stalled sweep's), and the duplicate
then closed a live attempt as lost and ran beside it, at the cost of an attempt (and of the job, on its last).

Now the attempt records its worker's lock-holder id (workers/heartbeat.py), and a delivery finding the job
running waits while that worker still beats and the attempt is within its time limit. Rows from before have none:
for them a delivery decides as before. Adding a nullable column rewrites nothing.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("job_attempts", sa.Column("worker", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("job_attempts", "worker")
