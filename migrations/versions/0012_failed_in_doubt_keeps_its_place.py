"""A failed service whose account may exist keeps its place on its server

Until now a service left its server's count of live services (whm_servers.used, migration 0009) when it failed.
But a create that failed after a createacct in doubt (timed out, reset, 5xx: `create_attempted_at` is set and
was not given back) may have made its account on WHM all the same. Its place could then go to another order,
and the server would hold one account more than its capacity; retrying the failed create (which adopts that
account) was refused with no_capacity until some other service ended.

Now a service counts on its server while it is pending, provisioning, active or suspended, as before, and also
while it is failed with `create_attempted_at` set. It leaves the count when it is terminated (a terminate of
such a service removes the account if it is there), or when a failed create gave its name back (WHM refused the
createacct: nothing was made). Provisioning it again keeps the place it holds. Failed services that never sent
a createacct still leave the count, as before.

Revision ID: 0012
Revises: 0011
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_LIVE = "('pending', 'provisioning', 'active', 'suspended')"


def _counted(row: str) -> str:
    """Whether a services row counts on its server: keep in step with domain.services.rules.holds_place."""
    return (f"({row}.server_id IS NOT NULL AND ({row}.status IN {_LIVE} "
            f"OR ({row}.status = 'failed' AND {row}.create_attempted_at IS NOT NULL)))")


def _triggers(counted, columns: str) -> None:
    op.execute(f"""
        CREATE OR REPLACE FUNCTION hostq_count_live_services() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
        DECLARE
          was_live boolean := TG_OP <> 'INSERT' AND {counted('OLD')};
          is_live boolean := TG_OP <> 'DELETE' AND {counted('NEW')};
        BEGIN
          IF was_live AND is_live AND OLD.server_id = NEW.server_id THEN
            RETURN NULL;
          END IF;
          IF was_live THEN
            UPDATE whm_servers SET used = used - 1 WHERE id = OLD.server_id;
          END IF;
          IF is_live THEN
            UPDATE whm_servers SET used = used + 1 WHERE id = NEW.server_id;
          END IF;
          RETURN NULL;
        END $$""")
    for trigger in ("services_count_insert", "services_count_delete", "services_count_update"):
        op.execute(f"DROP TRIGGER {trigger} ON services")
    op.execute(f"""
        CREATE TRIGGER services_count_insert AFTER INSERT ON services FOR EACH ROW
        WHEN ({counted('NEW')}) EXECUTE FUNCTION hostq_count_live_services()""")
    op.execute(f"""
        CREATE TRIGGER services_count_delete AFTER DELETE ON services FOR EACH ROW
        WHEN ({counted('OLD')}) EXECUTE FUNCTION hostq_count_live_services()""")
    op.execute(f"""
        CREATE TRIGGER services_count_update AFTER UPDATE OF {columns} ON services FOR EACH ROW
        WHEN (OLD.server_id IS DISTINCT FROM NEW.server_id OR {counted('OLD')} IS DISTINCT FROM {counted('NEW')})
        EXECUTE FUNCTION hostq_count_live_services()""")
    # Recount under the new rule, with no service moving meanwhile; the capacity backstop (0011) only refuses
    # raising a count, so a server that now holds more than its capacity keeps them and takes no new service.
    op.execute("LOCK TABLE services IN SHARE MODE")
    op.execute("ALTER TABLE whm_servers DISABLE TRIGGER whm_servers_no_overfill")
    op.execute(f"UPDATE whm_servers w SET used = (SELECT count(*) FROM services s WHERE s.server_id = w.id "
               f"AND {counted('s')})")
    op.execute("ALTER TABLE whm_servers ENABLE TRIGGER whm_servers_no_overfill")


def _live_only(row: str) -> str:
    return f"({row}.server_id IS NOT NULL AND {row}.status IN {_LIVE})"


def upgrade() -> None:
    _triggers(_counted, "status, server_id, create_attempted_at")


def downgrade() -> None:
    _triggers(_live_only, "status, server_id")
