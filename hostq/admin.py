"""What the operator commands do to the database (tenants, keys, servers)."""

from __future__ import annotations

from sqlalchemy import func, literal, or_, select

from domain.db import make_engine, make_sessionmaker, session_scope
from domain.provisioning.models import WhmServer
from domain.provisioning.service import add_server, update_server
from domain.services.models import Service
from domain.services.rules import TERMINATED
from domain.settings import Settings, SettingsError
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
        return {"key_id": str(cred.key_id), "tenant_id": str(tenant.id), "api_key": cred.api_key,
                "signing_secret": cred.signing_secret, "scopes": cred.scopes}
    return await in_transaction(settings, work)


async def register_server(settings: Settings, *, region: str, url: str, username: str, token: str,
                          name: str | None, capacity: int) -> dict:
    """`hostq servers add` (a URL already registered is refused: one server, one row)."""
    async def work(session):
        server = await add_server(session, settings.require_kek(), region=region, url=url, username=username,
                                  token=token, name=name, capacity=capacity, production=settings.production)
        return {"server_id": str(server.id), "region": server.region}
    return await in_transaction(settings, work)


async def sealed_elsewhere(settings: Settings, limit: int = 10_000) -> dict[str, int]:
    """How many live API keys and WHM servers in use (enabled, or disabled with services whose actions still run
    there) hold a secret this HOSTQ_KEK cannot open (sealed under another: an earlier `hostq dev` started from
    another directory, say), of how many looked at (`checked`: up to `limit` of each)."""
    from cryptography.exceptions import InvalidTag

    from domain.crypto import unseal
    from domain.tenants.models import ApiKey

    kek = settings.require_kek()

    def foreign(rows) -> int:
        count = 0
        for row_id, sealed in rows:
            try:
                unseal(kek, sealed, context=row_id.bytes)
            except (InvalidTag, ValueError):
                count += 1
        return count

    async def work(session):
        keys = (await session.execute(select(ApiKey.id, ApiKey.secret_encrypted)
                                      .where(ApiKey.revoked_at.is_(None)).limit(limit))).all()
        servers = (await session.execute(select(WhmServer.id, WhmServer.token_encrypted)
                                         .where(or_(WhmServer.enabled.is_(True), WhmServer.used > 0))
                                         .limit(limit))).all()
        return {"keys": foreign(keys), "servers": foreign(servers), "checked": len(keys) + len(servers)}
    return await in_transaction(settings, work)


def refuse_foreign_kek(settings: Settings) -> str | None:
    """SettingsError (one line) when HOSTQ_KEK opens none of the database's sealed secrets: a process on it would
    fail every signed request or WHM call, and a secret sealed with it would not open for the others. When only
    some do not open, the warning to print (a dev database can hold secrets of two keys)."""
    import asyncio

    found = asyncio.run(sealed_elsewhere(settings, limit=100))
    foreign = found["keys"] + found["servers"]
    if found["checked"] and foreign == found["checked"]:
        raise SettingsError(f"HOSTQ_KEK opens none of the {foreign} API key and WHM server secrets checked in this "
                            "database: it is not the key they were sealed with; set HOSTQ_KEK to that key")
    if foreign:
        return (f"{found['keys']} API key(s) and {found['servers']} WHM server(s) of the {found['checked']} checked "
                "were sealed with another HOSTQ_KEK: they will not work")
    return None


#: `hostq dev` names its fake WHM servers so: `sandbox-<region>`.
SANDBOX_PREFIX = "sandbox-"


async def register_sandboxes(settings: Settings, urls: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """`hostq dev`'s fake WHM servers, one per region at these URLs: an earlier run's `sandbox-<region>` is
    pointed at this run's fake and enabled, a missing one is added; the others (regions this run does not start,
    whose orders would wait for a worker that never comes, and the extra ones of a region that hostq before
    this change added on another port) are disabled. Returns the regions of those disabled, and the id of each
    region's server taking orders."""
    kek = settings.require_kek()

    async def work(session):
        ours = (select(WhmServer).where(WhmServer.name == literal(SANDBOX_PREFIX) + WhmServer.region)
                .order_by(WhmServer.id))
        servers = (await session.scalars(ours)).all()
        # each started region's first server takes this run's fake; every other one is set aside
        first = {}
        for server in servers:
            first.setdefault(server.region, server)
        aside = [server for server in servers if server.region not in urls or first[server.region] is not server]
        await _refuse_a_port_another_regions_services_use(session, aside, urls)
        kept, retired = {}, set()
        for server in servers:
            if server not in aside:
                kept[server.region] = str(server.id)
                await update_server(session, kek, server.id, url=urls[server.region], token="sandbox", enabled=True,
                                    unique_url=False)
            elif server.enabled:
                retired.add(server.region)
                await update_server(session, kek, server.id, enabled=False)
        for region in urls.keys() - kept.keys():
            added = await add_server(session, kek, region=region, url=urls[region], username="root",
                                     token="sandbox", name=SANDBOX_PREFIX + region, capacity=500, unique_url=False)
            kept[region] = str(added.id)
        return sorted(retired), kept
    return await in_transaction(settings, work)


async def _refuse_a_port_another_regions_services_use(session, aside, urls: dict[str, str]) -> None:
    """ValueError when this run's fake of one region would listen where an earlier run's fake of a region this run
    does not start did (a server set `aside`), and services not terminated are still on that server: their actions
    (a worker of that region, a retry) would reach the wrong fake and, say, terminate nothing there and call it
    done."""
    for server in aside:
        region = next((r for r, url in urls.items() if url == server.url and r != server.region), None)
        if region is None:
            continue
        live = await session.scalar(select(func.count()).select_from(Service).where(
            Service.server_id == server.id, Service.status != TERMINATED))
        if live:
            raise ValueError(
                f"{server.url} was the fake WHM of region {server.region} in an earlier run, and {live} service(s) "
                f"not terminated are on it: this run's fake of region {region} there would receive their actions. "
                f"Start region {server.region} too (--regions), or choose another --whm-port")


async def change_server(settings: Settings, server_id: str, **changes) -> dict:
    """`hostq servers update`: the server as `servers list` shows it, after the change."""
    async def work(session):
        server = await update_server(session, settings.require_kek(), server_id, production=settings.production,
                                     **changes)
        return _server_line(server)
    return await in_transaction(settings, work)


def _server_line(server: WhmServer) -> dict:
    return {"server_id": str(server.id), "region": server.region, "name": server.name, "url": server.url,
            "capacity": server.capacity, "used": server.used, "enabled": server.enabled}


async def list_servers(settings: Settings, *, region: str | None = None) -> list[dict]:
    """`hostq servers list`: every server (of `region`), with the services counting on it against its capacity."""
    async def work(session):
        query = select(WhmServer).order_by(WhmServer.region, WhmServer.id)
        if region is not None:
            query = query.where(WhmServer.region == region)
        return [_server_line(server) for server in (await session.scalars(query)).all()]
    return await in_transaction(settings, work)


def announce_change(settings: Settings, redis_key: str) -> None:
    """Bump a generation counter the API's key cache checks (api/principals.py), after the change committed.

    If Redis cannot be reached the API does not trust its cache either (it looks keys up in Postgres, and
    forgets what it had cached), so the change still holds; a warning says so. An API process that made no
    request while Redis was away may serve a key it cached just before for the rest of that entry's life
    (api/principals.py TTL_S, 10 s), unless Redis came back without its data (a new epoch).
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
              "they look keys up in Postgres while Redis is unreachable, and the change reaches every one of them "
              "within 10 s", file=sys.stderr)
