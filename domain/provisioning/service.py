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


#: Placement (rules.place in SQL, migration 0009): the region's server count and the least-loaded enabled server
#: with room, its row locked until the order's transaction ends so that concurrent orders never overfill it.
#: A SECURITY DEFINER function, as the tenant's own session sees only its rows. `{region}`: the region's parameter.
PLACE = "SELECT servers, chosen FROM hostq_place({region})"


def check_placement(region: str, servers: int, server_id: uuid.UUID | None) -> uuid.UUID:
    """The server PLACE chose among the region's `servers`; ValidationFailed (no such region) or
    NoCapacity (all full or disabled) when it chose none."""
    if not servers:
        raise ValidationFailed(f"unknown region {region!r}", errors=[{"field": "region", "message": "no such region"}])
    if server_id is None:
        raise NoCapacity(f"every server in region {region!r} is full")
    return server_id
