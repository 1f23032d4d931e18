"""Creating a WHM account exactly once: fix the username first, then ask before acting."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Protocol

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.catalog.models import Plan
from domain.customers.models import Customer
from domain.db import session_scope
from domain.errors import InvalidState, NotFound, PermanentIntegrationError
from domain.provisioning import rules as naming
from domain.provisioning.models import WhmServer
from domain.services import rules
from domain.services.models import Service


class WhmPort(Protocol):
    """What provisioning needs of a WHM server (workers/integrations/whm.py implements it)."""

    async def accountsummary(self, *, user: str | None = None, domain: str | None = None) -> dict | None: ...
    async def verify_new_username(self, user: str) -> bool: ...
    async def createacct(self, *, username: str, domain: str, plan: str, password: str, contactemail: str,
                         owner: str | None = None) -> dict: ...


async def _fix_username(sessions: async_sessionmaker[AsyncSession], service: Service, whm: WhmPort) -> str:
    """Choose a username, store it (before any createacct) and check WHM has it free; return it.

    The unique index on (server, first 8 characters) settles races between workers without reading
    every other username; a name WHM already knows is given back and the next candidate tried.
    """
    refused = 0
    for candidate in naming.username_candidates(service.domain):
        if naming.username_problem(candidate) or refused >= 50:
            if refused >= 50:
                break
            continue
        try:
            async with session_scope(sessions) as session:
                stored = (await session.execute(
                    update(Service).where(Service.id == service.id, Service.username.is_(None))
                    .values(username=candidate).returning(Service.username))).scalar_one_or_none()
        except IntegrityError:  # that prefix is taken on this server
            refused += 1
            continue
        if stored is None:  # another delivery of this job chose first: keep its choice
            async with sessions() as session:
                return await session.scalar(select(Service.username).where(Service.id == service.id))
        if await whm.verify_new_username(candidate):
            return candidate
        async with session_scope(sessions) as session:  # WHM has it (not ours: we never called createacct)
            await session.execute(update(Service).where(Service.id == service.id, Service.username == candidate)
                                  .values(username=None))
        refused += 1
    raise PermanentIntegrationError("username_unavailable", "could not find a free username on the server")


def _adopt_or_conflict(found: dict, username: str, domain: str) -> bool:
    """True when WHM's account is ours (same user, same domain); a conflict error otherwise."""
    if found.get("user") == username and str(found.get("domain", "")).lower() == domain:
        return True
    raise PermanentIntegrationError(
        "whm_account_conflict",
        f"WHM has {found.get('user')!r} with domain {found.get('domain')!r}, expected {username!r} with {domain!r}: "
        "an operator must look before this job is retried")


async def _load(sessions: async_sessionmaker[AsyncSession], service_id: uuid.UUID):
    async with session_scope(sessions) as session:
        service = await session.get(Service, service_id)
        if service is None:
            raise NotFound("the job's service no longer exists")
        server = await session.get(WhmServer, service.server_id)
        plan = await session.get(Plan, service.plan_id)
        email = await session.scalar(select(Customer.email).where(Customer.id == service.customer_id))
        return service, server, plan, email


async def _set(sessions: async_sessionmaker[AsyncSession], service_id: uuid.UUID, **values) -> None:
    async with session_scope(sessions) as session:
        await session.execute(update(Service).where(Service.id == service_id).values(**values))


async def create_account(sessions: async_sessionmaker[AsyncSession], service_id: uuid.UUID,
                         whm_for: Callable[[WhmServer], WhmPort]) -> dict:
    """Make the service's WHM account exist exactly once, then mark the service active."""
    service, server, plan, email = await _load(sessions, service_id)
    if service.status == rules.ACTIVE:
        return {"service_id": str(service.id), "username": service.username, "outcome": "already_active"}
    if service.status != rules.PROVISIONING:
        raise InvalidState(f"a {service.status} service is not being provisioned")
    whm = whm_for(server)
    verified = service.username is None
    if verified:
        service.username = await _fix_username(sessions, service, whm)
    username, domain = service.username, service.domain
    if service.create_attempted_at is not None:  # a createacct may have happened: ask WHM first (adopt rule)
        adopted = await _existing_is_ours(whm, username, domain, attempted=True)
    elif verified or await whm.verify_new_username(username):
        adopted = False  # the name is free on WHM and we never called createacct: nothing of ours exists
    else:
        adopted = await _existing_is_ours(whm, username, domain, attempted=False)
    if not adopted:
        await _set(sessions, service.id, create_attempted_at=datetime.now(timezone.utc))
        adopted = await _create(whm, username, domain, plan.whm_package, email)
    async with session_scope(sessions) as session:
        await session.execute(update(Service).where(Service.id == service.id, Service.status == rules.PROVISIONING)
                              .values(status=rules.after_provisioned(rules.PROVISIONING), updated_at=func.now()))
    return {"service_id": str(service.id), "username": username, "server_id": str(server.id),
            "outcome": "adopted" if adopted else "created"}


async def _create(whm: WhmPort, username: str, domain: str, package: str, email: str) -> bool:
    """createacct; on WHM's 'already exists', adopt our own account (True) or name the conflict."""
    try:
        await whm.createacct(username=username, domain=domain, plan=package, contactemail=email,
                             password=secrets.token_urlsafe(18))
        return False
    except PermanentIntegrationError as exc:
        if exc.code != "whm_account_exists":
            raise
        found = await whm.accountsummary(user=username)
        if found is None:  # the domain is someone else's
            raise PermanentIntegrationError("whm_domain_taken", f"{exc.message}: an operator must look") from None
        return _adopt_or_conflict(found, username, domain)


async def _existing_is_ours(whm: WhmPort, username: str, domain: str, *, attempted: bool) -> bool:
    """Ask WHM before creating: True to adopt an account that is ours; raise on a conflict."""
    found = await whm.accountsummary(user=username)
    if found is not None:
        if not attempted and found.get("user") == username and str(found.get("domain", "")).lower() != domain:
            raise PermanentIntegrationError("whm_username_taken",
                                            f"username {username!r} already exists on the WHM server for another domain")
        return _adopt_or_conflict(found, username, domain)
    owner = await whm.accountsummary(domain=domain)
    if owner is not None:
        raise PermanentIntegrationError(
            "whm_domain_taken", f"domain {domain!r} already belongs to WHM user {owner.get('user')!r}: an operator must look")
    return False
