"""`hostq tenants create|update`, `hostq keys create|rotate|revoke` (operations.md, 'Commands')."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import uuid
from datetime import timedelta

from api.ratelimit import key_generation_key, tenant_generation_key
from hostq.admin import announce_change, create_key, create_tenant, in_transaction, refuse_foreign_kek
from hostq.output import print_json
from domain.errors import ValidationFailed
from domain.settings import Settings
from domain.times import rfc3339
from domain.tenants import service as tenants

_GRACE = re.compile(r"^(\d{1,6})([smhd]?)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_GRACE = timedelta(days=30)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `tenants` and `keys` command trees to the `hostq` parser."""
    tenants = sub.add_parser("tenants", help="resellers").add_subparsers(dest="action", required=True)
    create = tenants.add_parser("create", help="create a tenant and its first key (every scope)")
    create.add_argument("--name", required=True)
    create.add_argument("--slug")
    create.add_argument("--sender", help='"Brand <billing@brand.example>"')
    create.add_argument("--support-email")
    create.add_argument("--rate-limit", type=int, default=600, help="requests per minute")
    create.set_defaults(run=_tenants_create)
    register_tenants_update(tenants)
    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    kcreate = keys.add_parser("create", help="issue a key with the given scopes")
    kcreate.add_argument("--tenant", required=True, help="tenant slug")
    kcreate.add_argument("--scopes", required=True, help="comma-separated, e.g. customers:read,jobs:read")
    kcreate.set_defaults(run=_keys_create)
    register_keys(keys)


def register_tenants_update(tenants_sub: argparse._SubParsersAction) -> None:
    """Add `tenants update` to the `tenants` command."""
    update = tenants_sub.add_parser("update", help="change a tenant's settings (only those given)")
    update.add_argument("--slug", required=True)
    update.add_argument("--sender", help='"Brand <billing@brand.example>"')
    update.add_argument("--support-email")
    update.add_argument("--rate-limit", type=int, help="requests per minute")
    update.add_argument("--lead-days", type=int, help="days before the due date that renewal invoices go out")
    update.add_argument("--dunning", help='"reminders=-3,1,3,7;suspend=10;terminate=30" (days after due; '
                                          'negative = before); parts not given are kept')
    update.set_defaults(run=tenants_update)


def register_keys(keys_sub: argparse._SubParsersAction) -> None:
    """Add `keys rotate` and `keys revoke` to the `keys` command."""
    rotate = keys_sub.add_parser("rotate", help="a new signing secret; the old one stays valid for --grace")
    rotate.add_argument("--key", required=True, help="key id")
    rotate.add_argument("--grace", default="24h", help="how long the old secret stays valid: 0, 30m, 24h, 7d")
    rotate.set_defaults(run=keys_rotate)
    revoke = keys_sub.add_parser("revoke", help="the key stops working at once")
    revoke.add_argument("--key", required=True, help="key id")
    revoke.set_defaults(run=keys_revoke)


def _tenants_create(args, settings: Settings) -> None:
    refuse_foreign_kek(settings)  # the key's secret would be sealed with a KEK the API cannot use
    print_json(asyncio.run(create_tenant(settings, name=args.name, slug=args.slug, sender=args.sender,
                                         support_email=args.support_email, rate_limit=args.rate_limit)))


def _keys_create(args, settings: Settings) -> None:
    refuse_foreign_kek(settings)
    print_json(asyncio.run(create_key(settings, tenant_slug=args.tenant, scopes=args.scopes)))


def parse_grace(text: str) -> timedelta:
    """`0`, `90s`, `30m`, `24h`, `7d` -> a timedelta of at most 30 days."""
    match = _GRACE.match(text.strip())
    if match is None:
        raise ValidationFailed(f"grace must look like 0, 30m, 24h or 7d, got {text!r}")
    grace = timedelta(seconds=int(match[1]) * _UNIT_S[match[2] or "s"])
    if grace > MAX_GRACE:
        raise ValidationFailed(f"grace must be at most {MAX_GRACE.days}d, got {text!r}")
    return grace


def _key_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        raise ValidationFailed(f"--key must be a key id (a UUID), got {text!r}") from None


def tenants_update(args, settings: Settings) -> None:
    """`hostq tenants update`: prints the tenant's settings after the change."""
    async def work(session):
        tenant = await tenants.update_tenant(session, args.slug, sender=args.sender, support_email=args.support_email,
                                             rate_limit=args.rate_limit, lead_days=args.lead_days,
                                             dunning=args.dunning)
        return {"tenant_id": str(tenant.id), "slug": tenant.slug, "name": tenant.name, "sender": tenant.sender,
                "support_email": tenant.support_email, "rate_limit": tenant.rate_limit,
                "lead_days": tenant.lead_days, "dunning": tenants.dunning_ladder(tenant)}
    result = asyncio.run(in_transaction(settings, work))
    announce_change(settings, tenant_generation_key(settings.namespace, result["tenant_id"]))
    print_json(result)


def keys_rotate(args, settings: Settings) -> None:
    """`hostq keys rotate`: prints the new secret (shown once) and until when the old one is accepted."""
    refuse_foreign_kek(settings)
    key_id, grace, kek = _key_id(args.key), parse_grace(args.grace), settings.require_kek()

    async def work(session):
        return await tenants.rotate_key(session, kek, key_id, grace=grace)
    secret, valid_until, cut = asyncio.run(in_transaction(settings, work))
    announce_change(settings, key_generation_key(settings.namespace, key_id))
    if cut is not None:
        print(f"hostq: the secret in use before the previous rotation was to be accepted until {rfc3339(cut)}: it "
              "stops working now (a key keeps only one previous secret)", file=sys.stderr)
    print_json({"key_id": str(key_id), "signing_secret": secret, "previous_valid_until": rfc3339(valid_until)})


def keys_revoke(args, settings: Settings) -> None:
    """`hostq keys revoke`: prints when the key stopped working."""
    key_id = _key_id(args.key)

    async def work(session):
        return await tenants.revoke_key(session, key_id)
    revoked_at = asyncio.run(in_transaction(settings, work))
    announce_change(settings, key_generation_key(settings.namespace, key_id))
    print_json({"key_id": str(key_id), "revoked_at": rfc3339(revoked_at)})
