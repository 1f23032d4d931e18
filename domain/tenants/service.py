"""Tenants and credentials: create, issue keys, and resolve a presented key."""

from __future__ import annotations

import re
import secrets
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from cryptography.exceptions import InvalidTag
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.crypto import hash_api_key, seal, unseal
from domain.customers.rules import valid_email
from domain.ids import new_id
from domain.errors import Conflict, InvalidState, Misconfigured, NotFound, ValidationFailed
from domain.tenants.models import ApiKey, Tenant
from domain.tenants.profile import sender_problem
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
    allowed_origins: frozenset[str] = frozenset()
    # When `secrets` stops being true (the previous secret's grace period ends): no copy may be used after it.
    changes_at: datetime | None = None


def slugify(name: str) -> str:
    """A URL-safe slug from a tenant's name."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()  # "Ação" -> "Acao"
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:63].strip("-")
    return slug or "tenant"


async def create_tenant(session: AsyncSession, kek: bytes, *, name: str, slug: str | None = None,
                        sender: str | None = None, support_email: str | None = None,
                        rate_limit: int = 600) -> tuple[Tenant, IssuedCredential]:
    """A new tenant and its first key with every scope."""
    slug = slug or slugify(name)
    if not name.strip():
        raise ValidationFailed("name must not be empty", errors=[{"field": "name", "message": "required"}])
    if not SLUG.match(slug):
        raise ValidationFailed(f"slug {slug!r} must be 1-63 lower-case letters, digits and hyphens, starting and "
                               "ending with a letter or digit")
    sender = None if sender is None else _check_sender(sender)
    support_email = None if support_email is None else _check_support_email(support_email)
    rate_limit = _check_rate_limit(rate_limit)
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


def _signing_secret(kek: bytes, key: ApiKey, sealed: bytes) -> str:
    try:
        return unseal(kek, sealed, context=key.id.bytes)
    except InvalidTag:
        raise Misconfigured(f"cannot decrypt the signing secret of API key {key.id}: this process's HOSTQ_KEK is "
                            "not the one the key was created with") from None


async def resolve_key(session: AsyncSession, kek: bytes, api_key: str) -> Principal | None:
    """The principal behind a presented key, or None if unknown or revoked."""
    row = (await session.execute(
        select(ApiKey, Tenant.rate_limit, Tenant.settings).join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.key_hash == hash_api_key(api_key), ApiKey.revoked_at.is_(None))
    )).first()
    if row is None:
        return None
    key, rate_limit, tenant_settings = row
    secrets_, changes_at = [_signing_secret(kek, key, key.secret_encrypted)], None
    if key.previous_secret_encrypted and key.previous_expires_at and key.previous_expires_at > datetime.now(timezone.utc):
        secrets_.append(_signing_secret(kek, key, key.previous_secret_encrypted))
        changes_at = key.previous_expires_at
    return Principal(tenant_id=key.tenant_id, key_id=key.id, scopes=frozenset(key.scopes), secrets=secrets_,
                     rate_limit=rate_limit,
                     allowed_origins=frozenset((tenant_settings or {}).get("allowed_origins", ())),
                     changes_at=changes_at)


# product.md, 'Dunning': a reminder 3 days before due, 1, 3 and 7 days after, suspend at 10, terminate at 30.
DEFAULT_DUNNING = {"reminders": [-3, 1, 3, 7], "suspend": 10, "terminate": 30}
MAX_RATE_LIMIT = 1_000_000
MAX_LEAD_DAYS = 90
MAX_LADDER_DAYS = 365


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field.replace('_', '-')}: {message}", errors=[{"field": field, "message": message}])


def _day(field: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise _invalid("dunning", f"{field} must be whole days, got {text.strip()!r}") from None


def parse_dunning(text: str, current: dict | None = None) -> dict:
    """`reminders=-3,1,3,7;suspend=10;terminate=30` over the current ladder; parts not given are kept."""
    ladder = dict(current or DEFAULT_DUNNING)
    seen: set[str] = set()
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, sep, value = (x.strip() for x in part.partition("="))
        if not sep or name not in DEFAULT_DUNNING or name in seen:
            raise _invalid("dunning", f"expected reminders=D,D,...;suspend=D;terminate=D, got {part!r}")
        seen.add(name)
        if name == "reminders":
            ladder[name] = sorted({_day(name, d) for d in value.split(",") if d.strip()})
        else:
            ladder[name] = _day(name, value)
    if not seen:
        raise _invalid("dunning", "give at least one of reminders, suspend, terminate")
    return check_dunning(ladder)


def check_dunning(ladder: dict) -> dict:
    """The ladder if its days make sense: 0 < suspend < terminate, reminders (negative = before due) before terminate."""
    suspend, terminate, reminders = ladder["suspend"], ladder["terminate"], ladder["reminders"]
    if not 1 <= suspend < terminate <= MAX_LADDER_DAYS:
        raise _invalid("dunning", f"need 1 <= suspend < terminate <= {MAX_LADDER_DAYS} days overdue, "
                                  f"got suspend={suspend} terminate={terminate}")
    if any(not -MAX_LADDER_DAYS <= day < terminate for day in reminders):
        raise _invalid("dunning", f"reminders must fall between {-MAX_LADDER_DAYS} and terminate-1 days, "
                                  f"got {reminders}")
    return {"reminders": list(reminders), "suspend": suspend, "terminate": terminate}


def _check_sender(value: str) -> str:
    """`Brand <billing@brand.example>` (profile.sender_problem: the one rule, the API's too)."""
    value = value.strip()
    if problem := sender_problem(value):
        raise _invalid("sender", f"{problem}, got {value!r}")
    return value


def _check_support_email(value: str) -> str:
    if not valid_email(value.strip()):
        raise _invalid("support_email", f"not a valid e-mail address: {value!r}")
    return value.strip()


def _check_rate_limit(value: int) -> int:
    if not 1 <= value <= MAX_RATE_LIMIT:
        raise _invalid("rate_limit", f"must be 1..{MAX_RATE_LIMIT} requests a minute, got {value}")
    return value


async def update_tenant(session: AsyncSession, slug: str, *, sender: str | None = None,
                        support_email: str | None = None, rate_limit: int | None = None,
                        lead_days: int | None = None, dunning: str | None = None) -> Tenant:
    """Change the settings that are given; the rest stay as they are."""
    tenant = await tenant_by_slug(session, slug)
    if sender is not None:
        tenant.sender = _check_sender(sender)
    if support_email is not None:
        tenant.support_email = _check_support_email(support_email)
    if rate_limit is not None:
        tenant.rate_limit = _check_rate_limit(rate_limit)
    if lead_days is not None:
        if not 0 <= lead_days <= MAX_LEAD_DAYS:
            raise _invalid("lead_days", f"must be 0..{MAX_LEAD_DAYS} days, got {lead_days}")
        tenant.lead_days = lead_days
    if dunning is not None:
        # A new dict, so SQLAlchemy sees the JSONB column change.
        tenant.settings = {**(tenant.settings or {}), "dunning": parse_dunning(dunning, dunning_ladder(tenant))}
    await session.flush()
    return tenant


def dunning_ladder(tenant: Tenant) -> dict:
    """The tenant's dunning ladder, or the default one."""
    return dict((tenant.settings or {}).get("dunning") or DEFAULT_DUNNING)


async def _key(session: AsyncSession, key_id: uuid.UUID) -> ApiKey:
    key = await session.get(ApiKey, key_id, with_for_update=True)
    if key is None:
        raise NotFound(f"no API key with id {key_id}")
    return key


async def rotate_key(session: AsyncSession, kek: bytes, key_id: uuid.UUID, *,
                     grace: timedelta) -> tuple[str, datetime | None, datetime | None]:
    """A new signing secret for the key; the old one stays valid for `grace` (none when zero).

    Returns the new secret, until when the old one is accepted, and, for a rotation during another's grace period,
    when that period was to end: it ends now, as only one previous secret is kept.
    """
    if grace < timedelta(0):
        raise _invalid("grace", "must not be negative")
    key = await _key(session, key_id)
    if key.revoked_at is not None:
        raise InvalidState(f"API key {key_id} is revoked")
    signing_secret = "hqs_" + secrets.token_urlsafe(32)
    cut = key.previous_expires_at if key.previous_secret_encrypted is not None else None
    cut = cut if cut is not None and cut > datetime.now(timezone.utc) else None
    valid_until = None
    if grace:  # to the next whole second: the time shown (domain/times.py) is then exactly the one kept
        valid_until = datetime.now(timezone.utc) + grace
        valid_until = valid_until.replace(microsecond=0) + timedelta(seconds=1 if valid_until.microsecond else 0)
    key.previous_secret_encrypted = key.secret_encrypted if valid_until else None
    key.previous_expires_at = valid_until
    key.secret_encrypted = seal(kek, signing_secret, context=key.id.bytes)
    await session.flush()
    return signing_secret, valid_until, cut


async def revoke_key(session: AsyncSession, key_id: uuid.UUID) -> datetime:
    """The key stops working at once; revoking twice keeps the first time."""
    key = await _key(session, key_id)
    if key.revoked_at is None:
        key.revoked_at = datetime.now(timezone.utc)
        key.previous_secret_encrypted, key.previous_expires_at = None, None
        await session.flush()
    return key.revoked_at


async def origin_allowed_anywhere(session: AsyncSession, origin: str) -> bool:
    """Whether any tenant lists `origin` among its CORS origins (a preflight carries no credentials)."""
    return await session.scalar(select(Tenant.id).where(Tenant.settings["allowed_origins"].contains([origin]))
                                .limit(1)) is not None
