"""A tenant's lists (`GET /v1/services`, `/v1/customers`, `/v1/jobs`) read only the page they return: an index
on (tenant_id, id) serves `WHERE tenant_id = $1 [AND id < cursor] ORDER BY id DESC LIMIT n` in its order.

Before (migration 0015), Postgres either sorted every row of the tenant on each page, or walked the primary key
past every other tenant's newer rows: 420 ms a page on a 2M-row table for a tenant whose rows were old."""

from __future__ import annotations

import json
import uuid

import pytest

from domain.pg import connect


def _nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


@pytest.mark.parametrize("table", ["services", "customers", "jobs"])
@pytest.mark.parametrize("cursor", [False, True])
async def test_a_tenants_page_is_read_in_index_order_without_a_sort_or_a_filter(settings, table, cursor):
    conn = await connect(settings.database_url)
    try:
        async with conn.transaction():
            # Only index paths without a sort: the one that serves the query exists, or the plan filters rows.
            await conn.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; "
                               "SET LOCAL enable_sort = off")
            where = "tenant_id = $1" + (" AND id < $2" if cursor else "")
            args = [uuid.uuid4()] + ([uuid.uuid4()] if cursor else [])
            [plan] = json.loads(await conn.fetchval(
                f"EXPLAIN (FORMAT JSON) SELECT * FROM {table} WHERE {where} ORDER BY id DESC LIMIT 51", *args))
    finally:
        await conn.close()
    nodes = list(_nodes(plan["Plan"]))
    scans = [n for n in nodes if "Scan" in n["Node Type"]]
    assert [n["Node Type"] for n in nodes] == ["Limit", "Index Scan"], nodes
    assert scans[0]["Index Name"] == f"ix_{table}_tenant_id" and scans[0]["Scan Direction"] == "Backward", scans
    assert "tenant_id" in scans[0]["Index Cond"] and "Filter" not in scans[0], scans
    assert ("id <" in scans[0]["Index Cond"]) == cursor, scans
