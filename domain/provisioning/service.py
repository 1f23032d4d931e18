"""Servers and placement: register WHM servers, pick one for an order."""

from __future__ import annotations

import ipaddress
import uuid
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidTag
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.crypto import seal, unseal
from domain.errors import Conflict, NoCapacity, NotFound, PermanentIntegrationError, ValidationFailed
from domain.ids import new_id, parse_id
from domain.provisioning import rules
from domain.provisioning.models import WhmServer
from domain.services.rules import holds_place

if TYPE_CHECKING:
    from domain.services.models import Service


def _on_this_machine(host: str) -> bool:
    """Whether `host` is this machine (localhost, 127.0.0.0/8, ::1): the only hosts a plain-http WHM URL may
    name in production, as the token then never leaves the machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(url: str, production: bool = False) -> str:
    """A WHM server's base URL: http(s)://host[:port][/path of a proxy] (the client adds /json-api/...). In
    production, https unless the WHM is on this machine: the token goes with every call."""
    if not url.lower().startswith(("http://", "https://")):
        raise ValidationFailed(f"url {url!r} must start with http:// or https://")
    scheme, _, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    # stored as one spelling (scheme and host in lower case), so the same server is found registered
    url = f"{scheme.lower()}://{host.lower()}{slash}{path}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or not parts.hostname or (port is not None and not 1 <= port <= 65535):
        raise ValidationFailed(f"url {url!r} needs a host and, if it names one, a port from 1 to 65535")
    if parts.username is not None or parts.password is not None:
        raise ValidationFailed("url must not carry credentials (they would be stored in clear): give them with "
                               "--username and --token")
    if parts.query or parts.fragment:
        raise ValidationFailed(f"url {url!r} must be a base URL without a query or fragment, e.g. "
                               "https://whm1.example:2087")
    if production and parts.scheme == "http" and not _on_this_machine(parts.hostname):
        raise ValidationFailed(f"url {url!r} is plain http: with HOSTQ_ENV=production the WHM token goes over https "
                               "only (WHM's port 2087), or over http to a WHM on this machine (127.0.0.0/8, ::1, localhost)")
    return url.rstrip("/")


#: More accounts than any WHM server holds, and within the column's integer.
MAX_CAPACITY = 1_000_000


def _check_capacity(capacity: int) -> int:
    if not 1 <= capacity <= MAX_CAPACITY:
        raise ValidationFailed(f"capacity must be at least 1 and at most {MAX_CAPACITY:,}")
    return capacity


def _not_blank(field: str, value: str) -> str:
    """A server's name, WHM username and token may not be blank: WHM would refuse the login, ops the name."""
    if not value.strip():
        raise ValidationFailed(f"{field} may not be empty", errors=[{"field": field, "message": "may not be empty"}])
    return value


async def _refuse_taken_url(session: AsyncSession, url: str, server_id: uuid.UUID | None = None) -> None:
    """Two rows for one WHM would each count only their own services, and fill the machine twice over."""
    query = select(WhmServer).where(WhmServer.url == url)
    taken = await session.scalar(query.where(WhmServer.id != server_id) if server_id else query)
    if taken is not None:
        raise Conflict(f"a server at {url} is already registered: {taken.id} in region {taken.region!r}")


async def add_server(session: AsyncSession, kek: bytes, *, region: str, url: str, username: str, token: str,
                     name: str | None = None, capacity: int = 500, unique_url: bool = True,
                     production: bool = False) -> WhmServer:
    """Register a WHM server in a region, its token sealed with the KEK; a URL already registered is a
    Conflict (`unique_url=False`: `hostq dev`, whose fakes of earlier runs may have held the port). `production`
    (HOSTQ_ENV): no plain-http URL to another machine."""
    if not rules.REGION.match(region):
        raise ValidationFailed(f"region {region!r} must be lower-case letters, digits and '-'")
    url, capacity = _check_url(url, production), _check_capacity(capacity)
    username, token = _not_blank("username", username), _not_blank("token", token)
    name = url if name is None else _not_blank("name", name)
    if unique_url:
        await _refuse_taken_url(session, url)
    server_id = new_id()
    server = WhmServer(id=server_id, region=region, url=url, username=username, name=name,
                       token_encrypted=seal(kek, token, context=server_id.bytes), capacity=capacity, enabled=True)
    session.add(server)
    await session.flush()
    return server


async def update_server(session: AsyncSession, kek: bytes, server_id: str | uuid.UUID, *, url: str | None = None,
                        username: str | None = None, token: str | None = None, name: str | None = None,
                        capacity: int | None = None, enabled: bool | None = None,
                        unique_url: bool = True, production: bool = False) -> WhmServer:
    """Change a server's connection, capacity or whether it takes new orders (None: unchanged). Its region
    stays: its services live there. A capacity below its live services only stops new orders reaching it.
    `unique_url` and `production` as in add_server."""
    parsed = server_id if isinstance(server_id, uuid.UUID) else parse_id(server_id)
    server = await session.get(WhmServer, parsed, with_for_update=True) if parsed else None
    if server is None:
        raise NotFound(f"no such server: {server_id}")
    if url is not None:
        server.url = _check_url(url, production)
        if unique_url:
            await _refuse_taken_url(session, server.url, server.id)
    if username is not None:
        server.username = _not_blank("username", username)
    if token is not None:
        server.token_encrypted = seal(kek, _not_blank("token", token), context=server.id.bytes)
    if name is not None:
        server.name = _not_blank("name", name)
    if capacity is not None:
        server.capacity = _check_capacity(capacity)
    if enabled is not None:
        server.enabled = enabled
    await session.flush()
    return server


def server_token(kek: bytes, server: WhmServer) -> str:
    """The server's API token in the clear (for the worker that calls it); a clear error on the wrong KEK."""
    try:
        return unseal(kek, server.token_encrypted, context=server.id.bytes)
    except InvalidTag:
        raise PermanentIntegrationError(
            "kek_mismatch", f"cannot decrypt the token of WHM server {server.id}: this process's HOSTQ_KEK is not "
            "the one the server was registered with") from None


async def regions(session: AsyncSession) -> set[str]:
    """Every region with at least one registered server."""
    return set((await session.scalars(select(WhmServer.region).distinct())).all())


#: Placement (rules.place in SQL, migration 0009): the region's server count and the least-loaded enabled server
#: with room, its row locked until the order's transaction ends so that concurrent orders never overfill it.
#: A SECURITY DEFINER function, as the tenant's own session sees only its rows. `{region}`: the region's parameter.
PLACE = "SELECT servers, chosen FROM hostq_place({region})"


async def no_room_again(session: AsyncSession, service: Service) -> str | None:
    """Why a failed service cannot count on its own server again (provisioned once more), or None if it can.

    A failed service whose createacct may have made its account still holds its place (services.holds_place):
    provisioning it again adopts that account where it is, so it needs nothing more of its server. Any other
    failed service left its server's count (whm_servers.used): going back to `provisioning` puts it there again,
    so its server must be enabled and have room, as for an order. The server's row stays locked until the
    transaction ends, as placement's does, so concurrent orders and retries cannot overfill it. The service stays
    on its own server.
    """
    if service.server_id is None or holds_place(service.status, service.create_attempted_at is not None):
        return None
    server = await session.scalar(select(WhmServer).where(WhmServer.id == service.server_id).with_for_update()
                                  .execution_options(populate_existing=True))
    if server is None:
        return None
    if not server.enabled:
        return f"its server {server.name!r} (region {server.region!r}) is disabled"
    if server.used >= server.capacity:
        return (f"its server {server.name!r} (region {server.region!r}) is full ({server.used} of "
                f"{server.capacity}): raise its capacity or terminate a service there")
    return None


def check_placement(region: str, servers: int, server_id: uuid.UUID | None) -> uuid.UUID:
    """The server PLACE chose among the region's `servers`; ValidationFailed (no such region) or
    NoCapacity (all full or disabled) when it chose none."""
    if not servers:
        raise ValidationFailed(f"unknown region {region!r}", errors=[{"field": "region", "message": "no such region"}])
    if server_id is None:
        raise NoCapacity(f"every server in region {region!r} is full or disabled")
    return server_id
