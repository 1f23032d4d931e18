"""Servers and placement: register WHM servers, pick one for an order."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.crypto import seal, unseal
from cryptography.exceptions import InvalidTag

from domain.errors import NoCapacity, PermanentIntegrationError, ValidationFailed
from domain.ids import new_id
from domain.provisioning import rules
from domain.provisioning.models import WhmServer

async def add_server(session: AsyncSession, kek: bytes, *, region: str, url: str, username: str, token: str,
                     name: str | None = None, capacity: int = 500) -> WhmServer:
    """Register a WHM server in a region, its token sealed with the KEK."""
    if not rules.REGION.match(region):
        raise ValidationFailed(f"region {region!r} must be lower-case letters, digits and '-'")
    if not url.startswith(("http://", "https://")):
        raise ValidationFailed(f"url {url!r} must start with http:// or https://")
    if capacity < 1:
        raise ValidationFailed("capacity must be at least 1")
    server_id = new_id()
    server = WhmServer(id=server_id, region=region, url=url.rstrip("/"), username=username, name=name or url,
                       token_encrypted=seal(kek, token, context=server_id.bytes), capacity=capacity, enabled=True)
    session.add(server)
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


#: The region's servers with their live accounts, across every tenant's services: a SECURITY DEFINER function
#: (migrations 0003, 0007), as the tenant's own session sees only its rows. `{region}`: the region's SQL parameter.
SERVER_LOADS = "SELECT server_id, capacity, enabled, used FROM hostq_server_loads({region})"
#: rules.place in SQL, over the rows of SERVER_LOADS named `{loads}`: the least-loaded enabled server with room,
#: ties to the first registered (lowest id). Ratios as float8, as Python divides them.
LEAST_LOADED = ("SELECT server_id FROM {loads} WHERE enabled AND used < capacity "
                "ORDER BY used::float8 / capacity, server_id LIMIT 1")


def check_placement(region: str, servers: int, server_id: uuid.UUID | None) -> uuid.UUID:
    """The server LEAST_LOADED chose among the region's `servers`; ValidationFailed (no such region) or
    NoCapacity (all full or disabled) when it chose none."""
    if not servers:
        raise ValidationFailed(f"unknown region {region!r}", errors=[{"field": "region", "message": "no such region"}])
    if server_id is None:
        raise NoCapacity(f"every server in region {region!r} is full")
    return server_id
