"""Placement that never overfills a server: a live-service counter per server, taken under the server's row lock

Until now every order counted its region's live services (hostq_server_loads, migrations 0003 and 0007) and
inserted its service without a lock: concurrent orders all saw the same count, and 30 concurrent orders on a
server with room for 5 placed 25 there. Now:

- whm_servers.used is the server's live services (pending, provisioning, active, suspended), kept by a trigger
  on services (insert, delete, a change of status or server), so it moves in the same transaction as the service;
- hostq_place(region) picks the least-loaded enabled server with room and locks its row (FOR UPDATE) until the
  order's transaction ends. A concurrent order on the same server waits for that lock, then sees the new count:
  if the server filled up meanwhile it picks again (another server of the region, or none: no_capacity).

An order whose recheck finds the server full keeps that row's lock until its transaction ends (Postgres keeps a
lock taken by FOR UPDATE even when the row no longer matches). That cannot deadlock: only a server committed as
full is held that way, its count cannot drop while it is held, and an order picks again only among servers with
room in a snapshot taken after its own failed recheck.

Capacity is checked when a service is placed (an order). A service that becomes live again later (a failed
one provisioned again) goes back on its own server; since 2026-11-23 only if that server has room then
(domain/provisioning/service.py no_room_again), else no_capacity.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_LIVE = "('pending', 'provisioning', 'active', 'suspended')"


def upgrade() -> None:
    op.execute("ALTER TABLE whm_servers ADD COLUMN used integer NOT NULL DEFAULT 0")
    op.execute("LOCK TABLE services IN SHARE MODE")  # no service moves while the counts are taken
    op.execute(f"""
        UPDATE whm_servers w SET used = (SELECT count(*) FROM services s
                                         WHERE s.server_id = w.id AND s.status IN {_LIVE})""")
    # Definer: a tenant's session sees only its own services but moves the shared counter.
    op.execute(f"""
        CREATE FUNCTION hostq_count_live_services() RETURNS trigger
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
            UPDATE whm_servers SET used = used + 1 WHERE id = NEW.server_id;
          END IF;
          RETURN NULL;
        END $$""")
    op.execute("REVOKE ALL ON FUNCTION hostq_count_live_services() FROM PUBLIC")
    # WHEN clauses keep the common updates (provisioning -> active, any other column) from calling it at all.
    op.execute(f"""
        CREATE TRIGGER services_count_insert AFTER INSERT ON services FOR EACH ROW
        WHEN (NEW.server_id IS NOT NULL AND NEW.status IN {_LIVE})
        EXECUTE FUNCTION hostq_count_live_services()""")
    op.execute(f"""
        CREATE TRIGGER services_count_delete AFTER DELETE ON services FOR EACH ROW
        WHEN (OLD.server_id IS NOT NULL AND OLD.status IN {_LIVE})
        EXECUTE FUNCTION hostq_count_live_services()""")
    op.execute(f"""
        CREATE TRIGGER services_count_update AFTER UPDATE OF status, server_id ON services FOR EACH ROW
        WHEN (OLD.server_id IS DISTINCT FROM NEW.server_id
              OR (OLD.status IN {_LIVE}) IS DISTINCT FROM (NEW.status IN {_LIVE}))
        EXECUTE FUNCTION hostq_count_live_services()""")
    # The least-loaded enabled server with room (ties: the lowest id, the first registered), locked; `servers`
    # is how many the region has (0: no such region), `chosen` NULL when every one is full or disabled.
    op.execute("""
        CREATE FUNCTION hostq_place(p_region text, OUT servers integer, OUT chosen uuid)
        LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public AS $$
        BEGIN
          SELECT count(*) INTO servers FROM whm_servers w WHERE w.region = p_region;
          FOR tries IN 1..5 LOOP
            SELECT w.id INTO chosen FROM whm_servers w
            WHERE w.region = p_region AND w.enabled AND w.used < w.capacity
            ORDER BY w.used::float8 / w.capacity, w.id LIMIT 1;
            EXIT WHEN chosen IS NULL;
            -- Waits while another order holds the row, then re-checks the room on its committed count.
            PERFORM FROM whm_servers w WHERE w.id = chosen AND w.enabled AND w.used < w.capacity FOR UPDATE;
            IF FOUND THEN
              RETURN;
            END IF;
          END LOOP;
          chosen := NULL;
        END $$""")
    op.execute("REVOKE ALL ON FUNCTION hostq_place(text) FROM PUBLIC")
    op.execute("GRANT EXECUTE ON FUNCTION hostq_place(text) TO hostq_app")
    op.execute("DROP FUNCTION hostq_server_loads(text)")


def downgrade() -> None:
    op.execute("""
        CREATE FUNCTION hostq_server_loads(p_region text)
        RETURNS TABLE (server_id uuid, capacity integer, enabled boolean, used bigint)
        LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public AS $$
        BEGIN
          RETURN QUERY
          SELECT w.id, w.capacity, w.enabled,
                 (SELECT count(*) FROM services s WHERE s.server_id = w.id
                    AND s.status IN ('pending', 'provisioning', 'active', 'suspended'))
          FROM whm_servers w WHERE w.region = p_region ORDER BY w.id;
        END $$""")
    op.execute("REVOKE ALL ON FUNCTION hostq_server_loads(text) FROM PUBLIC")
    op.execute("GRANT EXECUTE ON FUNCTION hostq_server_loads(text) TO hostq_app")
    op.execute("DROP FUNCTION hostq_place(text)")
    for trigger in ("services_count_insert", "services_count_delete", "services_count_update"):
        op.execute(f"DROP TRIGGER {trigger} ON services")
    op.execute("DROP FUNCTION hostq_count_live_services()")
    op.execute("ALTER TABLE whm_servers DROP COLUMN used")
