"""hostq_claim_key and hostq_store_answer: the keyed request's two idempotency statements as functions

A keyed POST on the plain asyncpg path claims its key in its transaction's first round trip and stores its
answer in the COMMIT's round trip, both sent as simple queries (literal values, no parameters). As plain
statements, Postgres parsed and planned them on every request; inside PL/pgSQL functions their plans are
cached per connection. SECURITY INVOKER (the default): row-level security applies as to any statement.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A claim made inside the request's own transaction: born committed_at (it is visible only if the
    # transaction commits). unique_violation: the key is taken; lock_not_available after wait_ms: a running
    # transaction holds it. The caller's lock_timeout is restored afterwards.
    op.execute("""
        CREATE FUNCTION hostq_claim_key(claim uuid, tenant uuid, idem_key text, fingerprint text,
                                        lock_seconds int, wait_ms int) RETURNS void LANGUAGE plpgsql AS $$
        DECLARE
          before text := current_setting('lock_timeout');
        BEGIN
          PERFORM set_config('lock_timeout', wait_ms || 'ms', true);
          INSERT INTO idempotency_keys (id, tenant_id, key, fingerprint, state, created_at, locked_until,
                                        committed_at)
          VALUES (claim, tenant, idem_key, fingerprint, 'in_flight', now(),
                  now() + make_interval(secs => lock_seconds), now());
          PERFORM set_config('lock_timeout', before, true);
        END $$""")
    op.execute("""
        CREATE FUNCTION hostq_store_answer(claim uuid, status int, headers jsonb, body bytea)
        RETURNS void LANGUAGE plpgsql AS $$
        BEGIN
          UPDATE idempotency_keys SET state = 'done', response_status = status, response_headers = headers,
                 response_body = body, completed_at = now()
          WHERE id = claim AND state = 'in_flight';
        END $$""")
    op.execute("GRANT EXECUTE ON FUNCTION hostq_claim_key(uuid, uuid, text, text, int, int) TO hostq_app")
    op.execute("GRANT EXECUTE ON FUNCTION hostq_store_answer(uuid, int, jsonb, bytea) TO hostq_app")


def downgrade() -> None:
    op.execute("DROP FUNCTION hostq_store_answer(uuid, int, jsonb, bytea)")
    op.execute("DROP FUNCTION hostq_claim_key(uuid, uuid, text, text, int, int)")
