"""Creating a WHM account exactly once: fix the username first, then ask before acting.

Every order runs this, so its statements are plain SQL on the worker's pool (system scope, see workers/pg.py;
a connection per statement, none held across WHM calls), each autocommitted on its own: the order of the
commits is the guarantee, not one transaction around them. The username and `create_attempted_at` are
stored together before verify_new_username, so both are committed before any createacct;
`create_attempted_at` thus means "WHM may hold an account of this service from here on" (a createacct may
have been sent, or an account made outside hostq with our name and domain was adopted), and a later attempt asks
WHM before creating. When verify_new_username itself fails, nothing went out under the name: it is given back.

A name hostq chose in this attempt is given back (both cleared) when WHM answers its createacct with a refusal:
nothing of ours can still be running under it, so a retry may choose again. That is what gets past a Unix user a
failed create left behind (integrations.md: a blind retry then fails with "username in use"). A name with an
earlier createacct in doubt (timed out, reset, 5xx) is never given back: WHM may still create under it. A name
the reseller chose is kept, but when WHM refuses its first createacct, `create_attempted_at` is cleared all the
same: nothing of ours exists under it, and the failed service then leaves its server's count (migration 0012).
A later createacct that WHM refuses at once puts `create_attempted_at` back to the earlier one's time: the call
that may still be running, and so the window below, is the earlier one.
A retry that finds the name in use with no account yet, while an earlier createacct may still be running on WHM
(create_settles_s after it was sent), waits (whm_create_in_doubt, retried) instead of concluding that a system
user remains.
"""

from __future__ import annotations

import random
import re
import secrets
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import NamedTuple, Protocol

import asyncpg

from domain.errors import (IntegrationError, InvalidState, NotFound, PermanentIntegrationError,
                           TransientIntegrationError)
from domain.jobs.tracking import Ticket, ensure_turn, in_turn, turn_args
from domain.provisioning import rules as naming
from domain.provisioning.models import WhmServer
from domain.services import rules
from domain.times import rfc3339


class WhmPort(Protocol):
    """What provisioning needs of a WHM server (workers/integrations/whm.py implements it)."""

    async def accountsummary(self, *, user: str | None = None, domain: str | None = None) -> dict | None: ...
    async def verify_new_username(self, user: str) -> bool: ...
    async def username_refusal(self, user: str) -> str | None: ...
    async def createacct(self, *, username: str, domain: str, plan: str, password: str, contactemail: str,
                         owner: str | None = None) -> dict: ...


# Every write to the service during an attempt is made only while the job is still at that attempt: one that
# outlived its turn (its lock taken over while it was paused) must neither store a name or a mark on a service
# the attempt that took over has settled since (a name on a failed service would hold a place on its server, a
# mark would make a terminate wait for a createacct never sent), nor take back what that attempt is using.
_STORE_USERNAME = f"""UPDATE services SET username = $2, create_attempted_at = now(), updated_at = now()
WHERE id = $1 AND username IS NULL AND {in_turn(3)} RETURNING username"""
_GIVE_BACK = f"""UPDATE services SET username = NULL, create_attempted_at = NULL, updated_at = now()
WHERE id = $1 AND username = $2 AND {in_turn(3)}"""
_MARK_ATTEMPT = f"UPDATE services SET create_attempted_at = $2, updated_at = now() WHERE id = $1 AND {in_turn(3)}"
_FORGET_ATTEMPT = f"""UPDATE services SET create_attempted_at = NULL, updated_at = now()
WHERE id = $1 AND username = $2 AND {in_turn(3)}"""
# Back to the earlier createacct's time: WHM refused this attempt's at once, so the one that may still be running
# (and the window in which it may still land) is the earlier one's.
_RESTORE_ATTEMPT = f"""UPDATE services SET create_attempted_at = $3, updated_at = now()
WHERE id = $1 AND username = $2 AND {in_turn(4)}"""

#: createacct's failures that are WHM's own answer (metadata.result 0, as _create names it, or our credentials
#: refused): the call is over and created nothing. whm_bad_response is not one: a 200 that is not WHM's envelope
#: (a proxy's page) says nothing of what WHM did.
_CREATE_REFUSED = frozenset(("whm_rejected", "whm_account_exists", "whm_account_conflict", "whm_domain_taken",
                             "whm_username_taken", "whm_auth_failed"))


#: Names WHM itself refuses (accounts made outside hostq) before a job gives up with `username_unavailable`.
WHM_REFUSALS_MAX = 50
#: After losing a race for a name, a job skips up to this many free candidates, at random: the others that lost
#: the same race read the same taken names, and would otherwise all try the same next one (a convoy in which
#: one wins a round, so a job of a burst could lose as many times as the burst has orders).
RACE_SPREAD_MAX = 64

_TAKEN_PREFIXES = """SELECT left(username, 8) FROM services
WHERE server_id = $1 AND username IS NOT NULL AND status <> 'terminated' AND starts_with(username, $2)"""


async def _fix_username(db: asyncpg.Connection | asyncpg.Pool, service: asyncpg.Record, whm: WhmPort,
                        ticket: Ticket | None) -> tuple[str, bool]:
    """Choose a username, store it (marking a createacct as possible) and check WHM has it free; return it, and
    whether it was chosen here (False: another delivery of the job had stored one first).

    The unique index on (server, first 8 characters) settles races between workers. The first candidate
    usually stands; when its first 8 are taken on the server, the taken ones of the domain's family are read at
    once and skipped, so a server with hundreds of `construtora-*.com.br` accounts costs one more read, not
    one refused statement per neighbour. A lost race is never a failure: each one uses up a candidate, and the
    next try skips a few free ones at random (RACE_SPREAD_MAX), so a burst of orders of one stem spreads over
    the names instead of queueing for them one by one. A name WHM already knows is given back and the next
    candidate tried.
    """
    taken: set[str] = set()
    refused = races = skip = 0
    for candidate in naming.username_candidates(service["domain"]):
        if candidate[:naming.UNIQUE_PREFIX] in taken or naming.username_problem(candidate):
            continue
        if skip:
            skip -= 1
            continue
        try:
            stored = await db.fetchval(_STORE_USERNAME, service["id"], candidate, *turn_args(ticket))
        except asyncpg.UniqueViolationError:  # that prefix is taken on this server
            races += 1
            taken.update(row[0] for row in await db.fetch(_TAKEN_PREFIXES, service["server_id"],
                                                          naming.username_family(service["domain"])))
            taken.add(candidate[:naming.UNIQUE_PREFIX])
            # the first refusal only says the names were not read yet; a later one, that another job took the name
            skip = random.randrange(min(races - 1, RACE_SPREAD_MAX) + 1)
            continue
        if stored is None:  # out of turn (raised here), or another delivery of this job chose first: keep its choice
            await ensure_turn(db, ticket)
            return await db.fetchval("SELECT username FROM services WHERE id = $1", service["id"]), False
        try:
            free = await whm.verify_new_username(candidate)
        except Exception:  # WHM did not answer: no createacct went out under the name, so nothing is in doubt
            await db.execute(_GIVE_BACK, service["id"], candidate, *turn_args(ticket))
            raise
        if free:
            return candidate, True
        # WHM has it (not ours: we never called createacct)
        await db.execute(_GIVE_BACK, service["id"], candidate, *turn_args(ticket))
        refused += 1
        if refused >= WHM_REFUSALS_MAX:
            break
    raise PermanentIntegrationError("username_unavailable", "could not find a free username on the server")


def _adopt_or_conflict(found: dict, username: str, domain: str) -> bool:
    """True when WHM's account is ours (same user, same domain); a conflict error otherwise (what the account
    holds instead only in its detail: it may be another reseller's)."""
    if found.get("user") == username and str(found.get("domain", "")).lower() == domain:
        return True
    raise PermanentIntegrationError(
        "whm_account_conflict",
        f"WHM has an account of username {username!r} or domain {domain!r} that is not this service's ({username!r} "
        f"with {domain!r}): an operator must look before this job is retried",
        detail=f"WHM's account: {found.get('user')!r} with domain {found.get('domain')!r}")


# The service with what creating its account needs: its server, its plan's WHM package, the contact email.
# The provision.create actor reads it in the statement that starts the attempt (workers/middleware.py).
LOAD_SERVICE = """
SELECT s.id, s.status, s.domain, s.username, s.create_attempted_at, p.whm_package, c.email,
       w.id AS server_id, w.url AS server_url, w.username AS server_username, w.token_encrypted
FROM services s
LEFT JOIN whm_servers w ON w.id = s.server_id
LEFT JOIN plans p ON p.id = s.plan_id
LEFT JOIN customers c ON c.id = s.customer_id
WHERE s.id = $1"""


# Provisioned: the service becomes active (the actor runs it in the statement that records the job's success).
ACTIVATE = (f"UPDATE services SET status = '{rules.after_provisioned(rules.PROVISIONING)}', updated_at = now() "
            f"WHERE id = $1 AND status = '{rules.PROVISIONING}'")


class ServerRef(NamedTuple):
    """A WHM server as whm_for takes it (what an ORM WhmServer has, without the cost of making one per job)."""

    id: uuid.UUID
    url: str
    username: str
    token_encrypted: bytes


def _server(service: asyncpg.Record) -> ServerRef:
    """The service's WHM server."""
    if service["server_id"] is None:
        raise InvalidState("the service is not placed on a WHM server")
    return ServerRef(service["server_id"], service["server_url"], service["server_username"],
                     service["token_encrypted"])


async def provision_account(db: asyncpg.Connection | asyncpg.Pool, service_id: uuid.UUID,
                            whm_for: Callable[[WhmServer | ServerRef], WhmPort]) -> dict:
    """Load the service, make its WHM account exist exactly once, then mark it active."""
    result = await create_account(db, await db.fetchrow(LOAD_SERVICE, service_id), whm_for)
    await db.execute(ACTIVATE, service_id)
    return result


async def create_account(db: asyncpg.Connection | asyncpg.Pool, service: asyncpg.Record | None,
                         whm_for: Callable[[WhmServer | ServerRef], WhmPort], ticket: Ticket | None = None, *,
                         create_settles_s: float = 0.0) -> dict:
    """Make the service's WHM account exist exactly once (`service`: its LOAD_SERVICE row); ACTIVATE follows.

    `ticket`: the job's attempt that runs it; a name is given back only while the job is still at it.
    `create_settles_s` (Settings.create_settles_s): how long after an earlier createacct was sent WHM may still be
    creating under the name, so that a name in use with no account yet means "wait", not "a system user remains".
    """
    if service is None:
        raise NotFound("the job's service no longer exists")
    service_id, username, domain = service["id"], service["username"], service["domain"]
    if service["status"] == rules.ACTIVE:
        return {"service_id": str(service_id), "username": username, "outcome": "already_active"}
    if service["status"] != rules.PROVISIONING:
        raise InvalidState(f"a {service['status']} service is not being provisioned")
    server = _server(service)
    whm = whm_for(server)
    verified = chosen_here = username is None
    if verified:
        username, chosen_here = await _fix_username(db, service, whm, ticket)
    if service["create_attempted_at"] is not None:  # a createacct may have happened: ask WHM first (adopt rule)
        adopted = await _ask_after_create_in_doubt(whm, username, domain)
    elif verified or (refused := await whm.username_refusal(username)) is None:
        adopted = False  # the name is free on WHM and we never called createacct: nothing of ours exists
    elif await _existing_is_ours(whm, username, domain, attempted=False):
        # made outside hostq, with the order's name and domain: not the reseller's to take by ordering it
        raise _made_outside_hostq(username, domain)
    else:  # createacct would be refused too: say what WHM said of the name, send nothing
        raise _name_held(username, domain, refused)
    if not adopted:
        if not verified:  # a username fixed earlier: _fix_username did not just mark the attempt
            await db.execute(_MARK_ATTEMPT, service_id, datetime.now(timezone.utc), *turn_args(ticket))
        await ensure_turn(db, ticket)  # not after the attempt that took over (nor a terminate that followed it)
        try:
            adopted = await _create(whm, username, domain, service["whm_package"], service["email"])
        except PermanentIntegrationError as exc:
            if exc.code in _CREATE_REFUSED and service["create_attempted_at"] is None:
                given_back = await _refused_first_create(db, whm, service_id, username, exc, ticket,
                                                         chosen_here=chosen_here, kept=not verified)
                if given_back is not None:
                    raise given_back from exc
            elif exc.code in _CREATE_REFUSED:  # refused at once: it moves no window (else each retry would)
                await db.execute(_RESTORE_ATTEMPT, service_id, username, service["create_attempted_at"],
                                 *turn_args(ticket))
            ours_may_hold = exc.code == "whm_username_taken" or (isinstance(exc, DomainHeld) and not exc.holder)
            if ours_may_hold and (
                    settles := still_settling(service["create_attempted_at"], create_settles_s)) is not None:
                # The name (or the domain) is in use and no account has it yet: most likely our earlier createacct,
                # still running.
                held, after = ((repr(username), "a system user left behind") if exc.code == "whm_username_taken"
                               else (f"domain {domain!r}", "something else holding the domain"))
                raise TransientIntegrationError(
                    "whm_create_in_doubt", f"WHM says {held} is in use but has no account of it yet: the "
                    f"createacct sent at {rfc3339(service['create_attempted_at'])} is most likely still running; "
                    f"asking WHM again (until {rfc3339(settles, up=True)}; after that, {after} is what remains)",
                    settles_at=settles) from exc
            raise
    return {"service_id": str(service_id), "username": username, "server_id": str(server.id),
            "outcome": "adopted" if adopted else "created"}


def _made_outside_hostq(username: str, domain: str) -> PermanentIntegrationError:
    """An order for an account WHM already has, with the order's username and domain, that hostq never sent a
    createacct for: taking it would let any reseller (who can read a domain from DNS and guess its username) take
    over, suspend or remove an account of another reseller's or of the server's owner. Only an operator adopts it."""
    return PermanentIntegrationError(
        naming.MADE_OUTSIDE, f"WHM already has an account {username!r} with domain {domain!r} that hostq did not "
        "create, so this order does not take it over. If it is this reseller's (an account moved under hostq), ask "
        "the operator to adopt it (`hostq jobs retry --adopt` with this job's id); otherwise terminate the service")


def _name_held(username: str, domain: str, refused: str) -> PermanentIntegrationError:
    """A kept name (the reseller's, or one an earlier attempt fixed) that WHM refuses, with no account of that name
    or domain: another account's first eight characters, a system user left behind, a reserved name."""
    return PermanentIntegrationError(
        "whm_username_taken", f"WHM refuses username {username!r}: {refused.rstrip('.')}. No WHM account has that "
        f"name or domain {domain!r}, so no createacct was sent. An operator must look: if what holds the name can be "
        "removed on the server (a system user a failed createacct left behind), remove it and retry the job; "
        "otherwise the service needs another username (terminate it and order again)")


def still_settling(sent: datetime | None, create_settles_s: float) -> datetime | None:
    """Until when a createacct sent at `sent` may still be creating its account on WHM; None once it cannot."""
    if sent is None or create_settles_s <= 0:
        return None
    settles = sent + timedelta(seconds=create_settles_s)
    return settles if datetime.now(timezone.utc) < settles else None


async def _left_behind(whm: WhmPort, username: str) -> bool:
    """Whether a createacct WHM just refused left a system user holding the name (free before it), with no account:
    a real WHM can. False when WHM cannot say now: the retry finds out."""
    try:
        return not await whm.verify_new_username(username) and await whm.accountsummary(user=username) is None
    except IntegrationError:
        return False


async def _refused_first_create(db: asyncpg.Connection | asyncpg.Pool, whm: WhmPort, service_id: uuid.UUID,
                                username: str, exc: PermanentIntegrationError, ticket: Ticket | None, *,
                                chosen_here: bool, kept: bool) -> PermanentIntegrationError | None:
    """WHM refused the service's first createacct, so nothing of ours exists: unmark the attempt, and give back a
    name hostq chose in this attempt (the error to raise instead, saying so). `kept`: the reseller's name, or one
    an earlier attempt fixed. Then, the row settled (a time limit cutting the question short loses nothing), ask
    whether the refused create left a system user holding the name (_left_behind): said in the error, which for a
    kept name is whm_username_taken at once (its retry would only find it so)."""
    if chosen_here:
        await db.execute(_GIVE_BACK, service_id, username, *turn_args(ticket))
    elif kept:
        await db.execute(_FORGET_ATTEMPT, service_id, username, *turn_args(ticket))
    left = exc.code == "whm_rejected" and await _left_behind(whm, username)
    remains = (f"; WHM now holds {username!r} with no account, most likely a system user the failed createacct "
               "left behind: remove it on the server") if left else ""
    if chosen_here:
        return PermanentIntegrationError(
            exc.code, f"{exc.message} (username {username!r} given back: a retry chooses one again{remains})",
            detail=exc.detail)
    if left:
        return PermanentIntegrationError(
            "whm_username_taken", f"{exc.message}{remains}, then retry the job: the account is then created under "
            "this name (an operator must look)")
    return None


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
        if found is not None:
            return _adopt_or_conflict(found, username, domain)
        said = exc.message.rstrip(".")  # WHM's own words first (when they may name another account: in the detail)
        if (owner := await whm.accountsummary(domain=domain)) is not None:
            raise _domain_of_another(domain, owner, said) from None
        if (holder := _domain_holder(exc.message, domain)) is not None and holder != username:
            # WHM named the domain, not the name: an addon or parked domain, a DNS zone, an account this token
            # cannot see. Not ours when it names another user (ours in the making would hold our name); when it
            # names nobody, a createacct of ours still running may be what holds it (create_account decides).
            raise DomainHeld(holder, f"no WHM account has {domain!r} as its main domain, but WHM holds it"
                             f"{' for another user' if holder else ''} (an addon or parked domain, a DNS zone, or "
                             "an account hostq's token cannot see): an operator must look",
                             detail=f"WHM: {said}") from None
        # Neither an account of that name nor of that domain: the name is held outside WHM's accounts (a system
        # user a failed createacct left behind). Never a second account under another name.
        raise PermanentIntegrationError(
            "whm_username_taken", f"{said}: no WHM account has username {username!r} or domain {domain!r}, "
            "so a system user probably remains from a failed createacct: an operator must look (once no createacct "
            "under that name can still be running, remove the system user on the server and retry the job: the "
            "account is then created under this name)") from None


class DomainHeld(PermanentIntegrationError):
    """createacct refused the domain as held on WHM, though no account has it as its main domain; `holder`: the
    user WHM named ("" if none)."""

    def __init__(self, holder: str, message: str, *, detail: str | None = None) -> None:
        super().__init__("whm_domain_taken", message, detail=detail)
        self.holder = holder


def _domain_of_another(domain: str, owner: dict, said: str | None = None) -> PermanentIntegrationError:
    """whm_domain_taken: another WHM account has `domain` (which, and WHM's words, only in the detail)."""
    return PermanentIntegrationError(
        "whm_domain_taken", f"domain {domain!r} belongs to another WHM account: an operator must look",
        detail=(f"WHM: {said}; " if said else "") + f"its account: {owner.get('user')!r}")


#: WHM's "... already exists in the userdata for the user “bob”." (cPanel's own text has curly quotes; the
#: sandbox's, as integrations.md writes it, straight ones).
_HELD_FOR_USER = re.compile(r'\bfor the user [“"]([^”"]*)[”"]')


def _domain_holder(reason: str, domain: str) -> str | None:
    """Whom WHM's 'already exists' `reason` says holds `domain` ("" when it names nobody); None when the reason
    is about the username, not the domain."""
    if domain.lower() not in reason.lower():
        return None
    found = _HELD_FOR_USER.search(reason)
    return found.group(1) if found else ""


#: What asking WHM first concludes: something is in the way (not a failure to ask).
_VERDICTS = frozenset(("whm_account_conflict", "whm_domain_taken", "whm_username_taken"))


async def _ask_after_create_in_doubt(whm: WhmPort, username: str, domain: str) -> bool:
    """_existing_is_ours once a createacct may have been sent; a refusal to answer says the account may exist."""
    try:
        return await _existing_is_ours(whm, username, domain, attempted=True)
    except PermanentIntegrationError as exc:
        if exc.code in _VERDICTS:
            raise
        raise PermanentIntegrationError(
            exc.code, f"{exc.message} (an earlier createacct under {username!r} may have created the account: "
            "once WHM answers accountsummary again, retry the job and an account of ours is adopted)",
            detail=exc.detail) from exc


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
        raise _domain_of_another(domain, owner)
    return False
