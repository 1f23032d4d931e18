"""A service never becomes live on a server with no room: the live-service counter refuses to pass capacity

Placement (hostq_place, migration 0009) and a failed service provisioned again (domain/provisioning/service.py
no_room_again) check a server's room under its row lock before a service counts on it. This is the backstop
under both: a trigger on whm_servers refuses to raise a server's count of live services (`used`, moved by
the services' trigger) beyond its capacity, with SQLSTATE 23514 (check_violation), so the statement that would
overfill the server fails and its transaction changes nothing. A future code path that forgets the check then
fails loudly instead of overfilling a server, as a path did until 2026-11-23.

Lowering a server's capacity below its count stays allowed (`hostq servers update --capacity`): the server then
takes no new service until it has room again. Moves between live statuses on the same server (active to
suspended and back) do not touch the counter and are never refused.

Revision ID: 0011
Revises: 0010
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE FUNCTION hostq_refuse_overfill() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          RAISE EXCEPTION 'server % has no room for another service (% of %)', NEW.id, OLD.used, NEW.capacity
            USING ERRCODE = 'check_violation', HINT = 'raise its capacity or terminate a service there';
        END $$""")
    op.execute("""
        CREATE TRIGGER whm_servers_no_overfill BEFORE UPDATE OF used ON whm_servers FOR EACH ROW
        WHEN (NEW.used > OLD.used AND NEW.used > NEW.capacity)
        EXECUTE FUNCTION hostq_refuse_overfill()""")


def downgrade() -> None:
    op.execute("DROP TRIGGER whm_servers_no_overfill ON whm_servers")
    op.execute("DROP FUNCTION hostq_refuse_overfill()")
