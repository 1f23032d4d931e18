"""hostq_commit_idempotency_claim(claim): mark a claim committed, or fail its transaction

The request's business transaction ends with `SELECT hostq_commit_idempotency_claim('<id>'); COMMIT`,
sent as one round trip: if the claim was taken over meanwhile, the function raises (SQLSTATE HQ409), the
transaction aborts and the COMMIT never runs, so the effect cannot happen twice.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SECURITY INVOKER (the default): it runs under the caller's row-level security like any statement.
    op.execute("""
        CREATE FUNCTION hostq_commit_idempotency_claim(claim uuid) RETURNS void LANGUAGE plpgsql AS $$
        BEGIN
          UPDATE idempotency_keys SET committed_at = now()
          WHERE id = claim AND state = 'in_flight' AND committed_at IS NULL;
          IF NOT FOUND THEN
            RAISE EXCEPTION 'idempotency claim % is no longer this request''s', claim USING ERRCODE = 'HQ409';
          END IF;
        END $$""")
    op.execute("GRANT EXECUTE ON FUNCTION hostq_commit_idempotency_claim(uuid) TO hostq_app")


def downgrade() -> None:
    op.execute("DROP FUNCTION hostq_commit_idempotency_claim(uuid)")
