"""Row-level security: the hostq_app role, tenant policies, erased customers

The application connects (or SET ROLEs) as hostq_app, which is neither superuser nor BYPASSRLS.
Each tenant-owned table lets a session see the rows of the tenant named by `hostq.tenant_id`,
or every row when `hostq.scope` is 'system' (workers, scheduler and CLI, which act by job id).
A session that sets neither sees nothing.

Revision ID: 0003
Revises: 0002
"""

from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TENANT_TABLES = ("customers", "plans", "services", "jobs", "idempotency_keys")
VISIBLE = ("tenant_id = nullif(current_setting('hostq.tenant_id', true), '')::uuid "
           "OR current_setting('hostq.scope', true) = 'system'")


def upgrade() -> None:
    # Roles are cluster-wide: create it once, and let the migrating user SET ROLE to it.
    op.execute("""
        DO $$ BEGIN
          IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hostq_app') THEN
            CREATE ROLE hostq_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
          END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;  -- another database's migration won the race
        END $$""")
    op.execute("DO $$ BEGIN EXECUTE format('GRANT hostq_app TO %I', current_user); "
               "EXCEPTION WHEN others THEN NULL; END $$")
    op.execute("GRANT USAGE ON SCHEMA public TO hostq_app")
    op.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO hostq_app")
    op.execute("REVOKE ALL ON alembic_version FROM hostq_app")
    op.execute("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO hostq_app")
    for table in TENANT_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY tenant_isolation ON {table} USING ({VISIBLE}) WITH CHECK ({VISIBLE})")
    # Placement counts live services on every server, whatever their tenant: a definer function
    # (run as the owner) answers that one question without opening the table to the tenant.
    op.execute("""
        CREATE FUNCTION hostq_server_loads(p_region text)
        RETURNS TABLE (server_id uuid, capacity integer, enabled boolean, used bigint)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
          SELECT w.id, w.capacity, w.enabled,
                 (SELECT count(*) FROM services s WHERE s.server_id = w.id
                    AND s.status IN ('pending', 'provisioning', 'active', 'suspended'))
          FROM whm_servers w WHERE w.region = p_region ORDER BY w.id
        $$""")
    op.execute("REVOKE ALL ON FUNCTION hostq_server_loads(text) FROM PUBLIC")
    op.execute("GRANT EXECUTE ON FUNCTION hostq_server_loads(text) TO hostq_app")
    op.add_column("customers", sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("customers", "erased_at")
    op.execute("DROP FUNCTION hostq_server_loads(text)")
    for table in TENANT_TABLES:
        op.execute(f"DROP POLICY tenant_isolation ON {table}")
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    op.execute("ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT, INSERT, UPDATE, DELETE ON TABLES FROM hostq_app")
    op.execute("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM hostq_app")
    op.execute("REVOKE USAGE ON SCHEMA public FROM hostq_app")
