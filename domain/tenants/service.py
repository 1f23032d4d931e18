"""Tenants and credentials: create, issue keys, and resolve a presented key."""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.crypto import hash_api_key, seal, unseal
from domain.ids import new_id
from domain.errors import Conflict, NotFound, ValidationFailed
from domain.tenants.models import ApiKey, Tenant
from domain.tenants.scopes import ALL_SCOPES

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class IssuedCredential:
    """A credential as shown once at creation: the key and secret in the clear."""

    key_id: uuid.UUID
    api_key: str
    signing_secret: str
    scopes: list[str]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the tenant, the key, what it may do, and its valid secrets."""

    tenant_id: uuid.UUID
    key_id: uuid.UUID
    scopes: frozenset[str]
    secrets: list[str]
    rate_limit: int


def slugify(name: str) -> str:
    """A URL-safe slug from a tenant's name."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:63].strip("-")
    return slug or "tenant"


async def create_tenant(session: AsyncSession, kek: bytes, *, name: str, slug: str | None = None,
                        sender: str | None = None, support_email: str | None = None,
                        rate_limit: int = 600) -> tuple[Tenant, IssuedCredential]:
    """A new tenant and its first key with every scope."""
    slug = slug or slugify(name)
    if not name.strip():
        raise ValidationFailed("name must not be empty", errors=[{"field": "name", "message": "required"}])
    if not SLUG.match(slug):
        raise ValidationFailed(f"slug {slug!r} must be lower-case letters, digits and hyphens")
    if rate_limit < 1:
        raise ValidationFailed("rate limit must be at least 1 request a minute")
    if await session.scalar(select(Tenant.id).where(Tenant.slug == slug)):
        raise Conflict(f"a tenant with slug {slug!r} already exists")
    tenant = Tenant(name=name.strip(), slug=slug, sender=sender, support_email=support_email,
                    rate_limit=rate_limit, timezone="America/Sao_Paulo", lead_days=14, settings={})
    session.add(tenant)
    await session.flush()
    credential = await create_key(session, kek, tenant_id=tenant.id, scopes=list(ALL_SCOPES))
    return tenant, credential


async def tenant_by_slug(session: AsyncSession, slug: str) -> Tenant:
    """The tenant with that slug, or NotFound."""
    tenant = await session.scalar(select(Tenant).where(Tenant.slug == slug))
    if tenant is None:
        raise NotFound(f"no tenant with slug {slug!r}")
    return tenant


async def create_key(session: AsyncSession, kek: bytes, *, tenant_id: uuid.UUID, scopes: list[str]) -> IssuedCredential:
    """Issue a key: store its hash and its signing secret sealed with the KEK."""
    api_key = "hq_" + secrets.token_urlsafe(32)
    signing_secret = "hqs_" + secrets.token_urlsafe(32)
    key_id = new_id()
    key = ApiKey(id=key_id, tenant_id=tenant_id, key_hash=hash_api_key(api_key), key_prefix=api_key[:11],
                 secret_encrypted=seal(kek, signing_secret, context=key_id.bytes), scopes=scopes)
    session.add(key)
    await session.flush()
    return IssuedCredential(key_id=key.id, api_key=api_key, signing_secret=signing_secret, scopes=scopes)


async def resolve_key(session: AsyncSession, kek: bytes, api_key: str) -> Principal | None:
    """The principal behind a presented key, or None if unknown or revoked."""
    row = (await session.execute(
        select(ApiKey, Tenant.rate_limit).join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.key_hash == hash_api_key(api_key), ApiKey.revoked_at.is_(None))
    )).first()
    if row is None:
        return None
    key, rate_limit = row
    secrets_ = [unseal(kek, key.secret_encrypted, context=key.id.bytes)]
    if key.previous_secret_encrypted and key.previous_expires_at and key.previous_expires_at > datetime.now(timezone.utc):
        secrets_.append(unseal(kek, key.previous_secret_encrypted, context=key.id.bytes))
    return Principal(tenant_id=key.tenant_id, key_id=key.id, scopes=frozenset(key.scopes), secrets=secrets_,
                     rate_limit=rate_limit)
