"""A service never becomes live on a server with no room: the live-service counter refuses to pass capacity

Placement (hostq_place, migration 0009) and a failed service provisioned again (domain/provisioning/service.py
no_room_again) check a server's room under its row lock before a service counts on it. This is the backstop
under both: the counter's trigger now counts a service in only while the server has room
(`used < capacity`), and otherwise raises SQLSTATE 23514 (check_violation), so the statement that would
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

_LIVE = "('pending', 'provisioning', 'active', 'suspended')"


def _counter(count_in: str) -> str:
    return f"""
        CREATE OR REPLACE FUNCTION hostq_count_live_services() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
        DECLARE
          was_live boolean := TG_OP <> 'INSERT' AND OLD.server_id IS NOT NULL AND OLD.status IN {_LIVE};
          is_live boolean := TG_OP <> 'DELETE' AND NEW.server_id IS NOT NULL AND NEW.status IN {_LIVE};
        BEGIN
          IF was_live AND is_live AND OLD.server_id = NEW.server_id THEN
            RETURN NULL;
          END IF;
          IF was_live THEN
            UPDATE whm_servers SET used = used - 1 WHERE id = OLD.server_id;
          END IF;
          IF is_live THEN
            {count_in}
          END IF;
          RETURN NULL;
        END $$"""


def upgrade() -> None:
    op.execute(_counter("""
            UPDATE whm_servers SET used = used + 1 WHERE id = NEW.server_id AND used < capacity;
            IF NOT FOUND THEN
              RAISE EXCEPTION 'server % has no room for service %', NEW.server_id, NEW.id
                USING ERRCODE = 'check_violation', HINT = 'raise its capacity or terminate a service there';
            END IF;"""))


def downgrade() -> None:
    op.execute(_counter("UPDATE whm_servers SET used = used + 1 WHERE id = NEW.server_id;"))
