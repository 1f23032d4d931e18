"""Operator commands on keys and tenants: `keys rotate|revoke` against the signed API, `tenants update`."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from domain.errors import NotFound, ValidationFailed
from domain.tenants.signing import sign, signed_payload
from hostq.tenants_cli import parse_grace, register
from tests.conftest import make_tenant, signed_client


def _parser() -> argparse.ArgumentParser:
    """The two command trees as hostq/cli.py wires them."""
    parser = argparse.ArgumentParser(prog="hostq")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


async def _run(capsys, settings, *argv: str) -> dict:
    """Run a command as `hostq` would (its own event loop, in a thread) and read its one JSON line."""
    args = _parser().parse_args(list(argv))
    await asyncio.to_thread(args.run, args, settings)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out
    return json.loads(out[0])


def _with(tenant: dict, secret: str) -> dict:
    return {**tenant, "signing_secret": secret}


async def _status(app, creds: dict) -> int:
    async with signed_client(app, creds) as c:
        return (await c.get("/v1/customers")).status_code


async def test_rotation_keeps_the_old_secret_valid_for_the_grace_period(app, anon, tenant, settings, capsys):
    out = await _run(capsys, settings, "keys", "rotate", "--key", str(tenant["key_id"]), "--grace", "1h")
    assert out["key_id"] == str(tenant["key_id"])
    new_secret = out["signing_secret"]
    assert new_secret.startswith("hqs_") and new_secret != tenant["signing_secret"]
    until = datetime.fromisoformat(out["previous_valid_until"].replace("Z", "+00:00"))
    assert abs(until - datetime.now(timezone.utc) - timedelta(hours=1)) < timedelta(minutes=1)

    assert await _status(app, tenant) == 200  # old secret, same API key
    assert await _status(app, _with(tenant, new_secret)) == 200

    stamp = str(int(time.time()))
    payload = signed_payload(stamp, "GET", "/v1/customers", b"")
    base = {"Authorization": f"Bearer {tenant['api_key']}", "X-Timestamp": stamp}
    both = f"v1={sign('hqs_wrong', payload)}, v1={sign(new_secret, payload)}"
    assert (await anon.get("/v1/customers", headers={**base, "X-Signature": both})).status_code == 200
    wrong = f"v1={sign('hqs_wrong', payload)},v1={sign('hqs_also_wrong', payload)}"
    assert (await anon.get("/v1/customers", headers={**base, "X-Signature": wrong})).status_code == 401


async def test_the_old_secret_stops_when_its_grace_ends_even_in_a_process_that_cached_the_key(
        app, tenant, settings, capsys):
    """Each API process caches resolved keys for a few seconds: never past the old secret's grace period."""
    out = await _run(capsys, settings, "keys", "rotate", "--key", str(tenant["key_id"]), "--grace", "2s")
    until = datetime.fromisoformat(out["previous_valid_until"].replace("Z", "+00:00"))
    assert await _status(app, tenant) == 200  # resolved again (the key's generation moved) and cached
    await asyncio.sleep((until - datetime.now(timezone.utc)).total_seconds() + 0.2)
    assert await _status(app, tenant) == 401
    assert await _status(app, _with(tenant, out["signing_secret"])) == 200


async def test_rotation_without_grace_refuses_the_old_secret_at_once(app, tenant, settings, capsys):
    first = await _run(capsys, settings, "keys", "rotate", "--key", str(tenant["key_id"]))  # default grace 24h
    assert first["previous_valid_until"] is not None
    second = await _run(capsys, settings, "keys", "rotate", "--key", str(tenant["key_id"]), "--grace", "0")
    assert second["previous_valid_until"] is None
    assert await _status(app, tenant) == 401
    assert await _status(app, _with(tenant, first["signing_secret"])) == 401
    assert await _status(app, _with(tenant, second["signing_secret"])) == 200


async def test_a_rotation_during_anothers_grace_says_it_ends_that_grace(app, tenant, settings, capsys):
    """One previous secret is kept: the secret from before the first rotation stops at the second, and the operator
    is told so (the first rotation had promised it an hour)."""
    first = await _run(capsys, settings, "keys", "rotate", "--key", str(tenant["key_id"]), "--grace", "1h")
    args = _parser().parse_args(["keys", "rotate", "--key", str(tenant["key_id"]), "--grace", "1h"])
    await asyncio.to_thread(args.run, args, settings)
    said = capsys.readouterr()
    second = json.loads(said.out)
    assert said.err.startswith("hostq: the secret in use before the previous rotation was to be accepted until "
                               f"{first['previous_valid_until']}: it stops working now"), said.err
    assert await _status(app, tenant) == 401
    assert await _status(app, _with(tenant, first["signing_secret"])) == 200  # the previous one, in its grace
    assert await _status(app, _with(tenant, second["signing_secret"])) == 200
    third = _parser().parse_args(["keys", "rotate", "--key", str(tenant["key_id"]), "--grace", "0"])
    await asyncio.to_thread(third.run, third, settings)
    assert "stops working now" in capsys.readouterr().err  # a grace of 0 cuts the previous one's too
    fourth = _parser().parse_args(["keys", "rotate", "--key", str(tenant["key_id"])])
    await asyncio.to_thread(fourth.run, fourth, settings)
    assert capsys.readouterr().err == ""  # nothing was in its grace


async def test_revoke_stops_the_key_at_once(app, tenant, settings, capsys):
    assert await _status(app, tenant) == 200
    out = await _run(capsys, settings, "keys", "revoke", "--key", str(tenant["key_id"]))
    assert out["key_id"] == str(tenant["key_id"])
    assert datetime.fromisoformat(out["revoked_at"].replace("Z", "+00:00")) <= datetime.now(timezone.utc)
    assert await _status(app, tenant) == 401
    again = await _run(capsys, settings, "keys", "revoke", "--key", str(tenant["key_id"]))
    assert again["revoked_at"] == out["revoked_at"]


def test_unknown_or_malformed_key_is_one_error(settings, capsys):
    for command in ("rotate", "revoke"):
        args = _parser().parse_args(["keys", command, "--key", str(uuid.uuid4())])
        with pytest.raises(NotFound):
            args.run(args, settings)
        args = _parser().parse_args(["keys", command, "--key", "not-a-uuid"])
        with pytest.raises(ValidationFailed):
            args.run(args, settings)
    assert capsys.readouterr().out == ""


def test_grace_durations():
    assert parse_grace("0") == timedelta(0)
    assert parse_grace("30m") == timedelta(minutes=30)
    assert parse_grace("24h") == timedelta(hours=24)
    assert parse_grace("7d") == timedelta(days=7)
    for bad in ("", "-1h", "1w", "1.5h", "31d"):
        with pytest.raises(ValidationFailed):
            parse_grace(bad)


def _create_tenant(settings) -> dict:
    from hostq.admin import create_tenant
    return asyncio.run(create_tenant(settings, name=f"Brand {uuid.uuid4().hex[:8]}", slug=None, sender=None,
                                     support_email=None, rate_limit=600))


def _update(capsys, settings, *argv: str) -> dict:
    args = _parser().parse_args(["tenants", "update", *argv])
    args.run(args, settings)
    return json.loads(capsys.readouterr().out)


def test_tenants_update_changes_what_is_given(settings, capsys):
    created = _create_tenant(settings)
    out = _update(capsys, settings, "--slug", created["slug"], "--sender", "Acme <billing@acme.example>",
                  "--support-email", "help@acme.example", "--rate-limit", "120", "--lead-days", "10",
                  "--dunning", "reminders=7,-3,1,3;suspend=12;terminate=40")
    assert out == {"tenant_id": created["tenant_id"], "slug": created["slug"], "name": out["name"],
                   "sender": "Acme <billing@acme.example>", "support_email": "help@acme.example",
                   "rate_limit": 120, "lead_days": 10,
                   "dunning": {"reminders": [-3, 1, 3, 7], "suspend": 12, "terminate": 40}}

    later = _update(capsys, settings, "--slug", created["slug"], "--dunning", "suspend=5")
    assert later["dunning"] == {"reminders": [-3, 1, 3, 7], "suspend": 5, "terminate": 40}
    assert (later["sender"], later["rate_limit"], later["lead_days"]) == ("Acme <billing@acme.example>", 120, 10)


def test_tenants_update_refuses_bad_values(settings, capsys):
    slug = _create_tenant(settings)["slug"]
    capsys.readouterr()
    bad = [["--dunning", "suspend=30;terminate=10"], ["--dunning", "reminders=1,x"], ["--dunning", "pause=3"],
           ["--dunning", "reminders=1,40;terminate=30"], ["--dunning", ""], ["--rate-limit", "0"],
           ["--lead-days", "-1"], ["--sender", "Acme billing"], ["--sender", "billing@acme.example"],
           ["--support-email", "nope"]]
    for argv in bad:
        args = _parser().parse_args(["tenants", "update", "--slug", slug, *argv])
        with pytest.raises(ValidationFailed):
            args.run(args, settings)
    args = _parser().parse_args(["tenants", "update", "--slug", "no-such-tenant", "--rate-limit", "5"])
    with pytest.raises(NotFound):
        args.run(args, settings)
    assert capsys.readouterr().out == ""
    assert _update(capsys, settings, "--slug", slug)["dunning"] == {"reminders": [-3, 1, 3, 7], "suspend": 10,
                                                                   "terminate": 30}


def test_tenants_create_checks_its_settings_as_update_does(settings):
    from hostq.admin import create_tenant
    for bad in ({"sender": "Brand <notanemail>"}, {"sender": "Brand <billing@brand.example"},
                {"support_email": "notanemail"}, {"rate_limit": 0}, {"rate_limit": 99_999_999_999}):
        options = {"sender": None, "support_email": None, "rate_limit": 600, **bad}
        with pytest.raises(ValidationFailed):
            asyncio.run(create_tenant(settings, name=f"Bad {uuid.uuid4().hex[:8]}", slug=None, **options))
    suffix = uuid.uuid4().hex[:6]
    made = asyncio.run(create_tenant(settings, name=f"Ação Hospedagem {suffix}", slug=None,
                                     sender=" Ação <billing@acao.example> ", support_email="help@acao.example",
                                     rate_limit=1_000_000))
    assert made["slug"] == f"acao-hospedagem-{suffix}"  # accents folded, not dropped with their letter


async def test_resolved_keys_are_cached_until_a_change_is_announced(app, sessions, settings):
    from sqlalchemy import func, update

    from api.ratelimit import key_generation_key
    from domain.db import session_scope
    from domain.tenants.models import ApiKey
    from hostq.admin import announce_change
    creds = await make_tenant(sessions, settings)
    async with signed_client(app, creds) as c:
        assert (await c.get("/v1/customers")).status_code == 200
        async with session_scope(sessions) as session:  # revoked behind the API's back: no announcement
            await session.execute(update(ApiKey).where(ApiKey.id == creds["key_id"]).values(revoked_at=func.now()))
        assert (await c.get("/v1/customers")).status_code == 200  # served from the cache
        await asyncio.to_thread(announce_change, settings, key_generation_key(settings.namespace, creds["key_id"]))
        assert (await c.get("/v1/customers")).status_code == 401  # the very next request


async def test_a_key_revoked_while_redis_lost_its_data_is_not_served_from_the_cache(app, sessions, settings):
    """`hostq keys revoke` could not bump the key's counter (Redis down), and Redis came back without its data:
    the counters read as they did before any change, so only the Redis's new epoch can tell the cache."""
    from redis.asyncio import Redis
    from sqlalchemy import func, update

    from domain.db import session_scope
    from domain.tenants.models import ApiKey
    creds = await make_tenant(sessions, settings)
    async with signed_client(app, creds) as c:
        assert (await c.get("/v1/customers")).status_code == 200  # cached
        async with session_scope(sessions) as session:
            await session.execute(update(ApiKey).where(ApiKey.id == creds["key_id"]).values(revoked_at=func.now()))
        redis = Redis.from_url(settings.redis_url)
        try:  # what a restart of a Redis that keeps nothing did to the keys the cache is checked against
            await redis.delete(f"{settings.namespace}:auth-epoch")
        finally:
            await redis.aclose()
        assert (await c.get("/v1/customers")).status_code == 401


async def test_a_key_revoked_while_redis_was_away_is_not_served_from_the_cache_once_it_is_back(
        app, sessions, settings):
    """Redis kept its data but missed the revocation's bump: a process that saw Redis away forgets every key."""
    from sqlalchemy import func, update

    from domain.db import session_scope
    from domain.tenants.models import ApiKey
    revoked, other = await make_tenant(sessions, settings), await make_tenant(sessions, settings)
    limiter = app.state.resources.limiter
    async with signed_client(app, revoked) as c, signed_client(app, other) as o:
        assert (await c.get("/v1/customers")).status_code == 200  # cached
        async with session_scope(sessions) as session:
            await session.execute(update(ApiKey).where(ApiKey.id == revoked["key_id"]).values(revoked_at=func.now()))
        limiter._skip_until = time.monotonic() + 60  # Redis unreachable: what the limiter does after a failure
        try:
            assert (await o.get("/v1/customers")).status_code == 200  # another key's request meanwhile
        finally:
            limiter._skip_until = 0.0  # Redis is back, its counters as they were
        assert (await c.get("/v1/customers")).status_code == 401


async def test_keys_create_names_the_tenant_and_the_key_signs_for_it(app, tenant, settings, capsys):
    out = await _run(capsys, settings, "keys", "create", "--tenant", tenant["slug"], "--scopes", "customers:read")
    assert out["tenant_id"] == str(tenant["tenant_id"])  # `hostq dev` shows it on a second run from this
    assert out["scopes"] == ["customers:read"] and out["key_id"] != str(tenant["key_id"])
    assert await _status(app, {**tenant, **out}) == 200
