"""What the operator commands do to the database (tenants, keys, servers)."""

from __future__ import annotations

from sqlalchemy import select

from domain.db import make_engine, make_sessionmaker, session_scope
from domain.provisioning.models import WhmServer
from domain.provisioning.service import add_server
from domain.settings import Settings
from domain.tenants import service as tenants
from domain.tenants.scopes import parse_scopes


async def in_transaction(settings: Settings, work):
    """Run `work(session)` in one transaction on a short-lived engine (a CLI command's whole life)."""
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        async with session_scope(make_sessionmaker(engine)) as session:
            return await work(session)
    finally:
        await engine.dispose()


async def create_tenant(settings: Settings, *, name: str, slug: str | None, sender: str | None,
                        support_email: str | None, rate_limit: int) -> dict:
    """`hostq tenants create`."""
    async def work(session):
        tenant, cred = await tenants.create_tenant(session, settings.require_kek(), name=name, slug=slug,
                                                   sender=sender, support_email=support_email, rate_limit=rate_limit)
        return {"tenant_id": str(tenant.id), "slug": tenant.slug, "key_id": str(cred.key_id),
                "api_key": cred.api_key, "signing_secret": cred.signing_secret, "scopes": cred.scopes}
    return await in_transaction(settings, work)


async def create_key(settings: Settings, *, tenant_slug: str, scopes: str) -> dict:
    """`hostq keys create`."""
    wanted = parse_scopes(scopes)

    async def work(session):
        tenant = await tenants.tenant_by_slug(session, tenant_slug)
        cred = await tenants.create_key(session, settings.require_kek(), tenant_id=tenant.id, scopes=wanted)
        return {"key_id": str(cred.key_id), "api_key": cred.api_key, "signing_secret": cred.signing_secret,
                "scopes": cred.scopes}
    return await in_transaction(settings, work)


async def register_server(settings: Settings, *, region: str, url: str, username: str, token: str,
                          name: str | None, capacity: int, reuse: bool = False) -> dict:
    """`hostq servers add`; with `reuse`, a server already registered at that URL is returned instead."""
    async def work(session):
        if reuse:
            existing = await session.scalar(select(WhmServer).where(WhmServer.url == url.rstrip("/"),
                                                                     WhmServer.region == region))
            if existing is not None:
                return {"server_id": str(existing.id), "region": existing.region}
        server = await add_server(session, settings.require_kek(), region=region, url=url, username=username,
                                  token=token, name=name, capacity=capacity)
        return {"server_id": str(server.id), "region": server.region}
    return await in_transaction(settings, work)


async def list_servers(settings: Settings, *, region: str | None = None) -> list[dict]:
    """`hostq servers list`: every server (of `region`), with its live services against its capacity."""
    async def work(session):
        query = select(WhmServer).order_by(WhmServer.region, WhmServer.id)
        if region is not None:
            query = query.where(WhmServer.region == region)
        return [{"server_id": str(s.id), "region": s.region, "name": s.name, "url": s.url, "capacity": s.capacity,
                 "used": s.used, "enabled": s.enabled} for s in (await session.scalars(query)).all()]
    return await in_transaction(settings, work)


def announce_change(settings: Settings, redis_key: str) -> None:
    """Bump a generation counter the API's key cache checks (api/principals.py), after the change committed.

    If Redis cannot be reached the API does not trust its cache either (it looks keys up in Postgres),
    so the change still holds; a warning says so.
    """
    import sys

    import redis
    try:
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
        client.incr(redis_key)
        client.expire(redis_key, 7 * 24 * 3600)
        client.close()
    except (redis.RedisError, OSError) as exc:
        print(f"hostq: warning: could not tell running API processes through Redis ({exc}); "
              "they look keys up in Postgres while Redis is unreachable", file=sys.stderr)
