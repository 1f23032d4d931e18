"""hostq_server_loads in PL/pgSQL: its query planned once per connection, not on every order

Every order places itself with hostq_server_loads (migration 0003). A LANGUAGE sql function that cannot be
inlined (it is SECURITY DEFINER) has its body parsed and planned on every call (~0.15 ms here); in PL/pgSQL the
plan is cached per connection. Same signature, rows and order, still SECURITY DEFINER (it counts every tenant's
services) with a fixed search_path; CREATE OR REPLACE keeps its grants.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_HEAD = """
    CREATE OR REPLACE FUNCTION hostq_server_loads(p_region text)
    RETURNS TABLE (server_id uuid, capacity integer, enabled boolean, used bigint)"""
# Columns qualified throughout: in PL/pgSQL the OUT columns above are also variables.
_QUERY = """
      SELECT w.id, w.capacity, w.enabled,
             (SELECT count(*) FROM services s WHERE s.server_id = w.id
                AND s.status IN ('pending', 'provisioning', 'active', 'suspended'))
      FROM whm_servers w WHERE w.region = p_region ORDER BY w.id"""


def upgrade() -> None:
    op.execute(f"""{_HEAD}
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public AS $$
    BEGIN
      RETURN QUERY {_QUERY};
    END $$""")


def downgrade() -> None:
    op.execute(f"""{_HEAD}
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $${_QUERY}
    $$""")
