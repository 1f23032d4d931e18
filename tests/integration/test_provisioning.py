"""Creating the WHM account exactly once: username fixed first, adopt after a timeout, conflicts named."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from types import SimpleNamespace

import httpx
import pytest

from domain.db import session_scope
from domain.errors import PermanentIntegrationError, TransientIntegrationError
from domain.jobs import effects
from domain.provisioning import rules as naming
from domain.provisioning.accounts import LOAD_SERVICE, create_account, provision_account
from domain.services.models import Service
from hostq.sandbox.whm import create_app as fake_whm
from tests.fakes import serve_in_thread
from tests.integration.helpers import add_region, customer_and_plan, order_body
from workers.integrations.whm import WhmClient
from workers.pg import SystemPool


@pytest.fixture(scope="module")
def whm_url():
    """One fake WHM for the module."""
    with serve_in_thread(fake_whm(token="sandbox")) as url:
        yield url


@pytest.fixture
async def whm(whm_url):
    """A client with a short createacct timeout, so a held answer times out quickly."""
    async with WhmClient(whm_url, "root", "sandbox", create_timeout=0.5, read_timeout=2) as client:
        yield client


@pytest.fixture(scope="module")
async def db(settings):
    """The workers' system-scope pool, as the provision.create actor gets it."""
    pool = SystemPool(settings.database_url, max_size=2)
    yield await pool.get()
    await pool.close()


@pytest.fixture
async def control(whm_url):
    async with httpx.AsyncClient(base_url=whm_url) as c:
        yield c


async def _order(client, sessions, settings, whm_url, **extra) -> dict:
    region, _ = await add_region(sessions, settings, url=whm_url)
    customer_id, plan = await customer_and_plan(client)
    response = await client.post("/v1/services", json=order_body(customer_id, plan, region, **extra))
    assert response.status_code == 202, response.text
    return response.json()["service"]


async def _accounts_for(control, domain: str) -> list[dict]:
    return [a for a in (await control.get("/__sandbox/accounts")).json()["accounts"] if a["domain"] == domain]


async def _service(sessions, service_id: str) -> Service:
    async with sessions() as session:
        return await session.get(Service, uuid.UUID(service_id))


async def test_creates_one_account_and_activates_the_service(client, db, sessions, settings, whm_url, whm, control):
    ordered = await _order(client, sessions, settings, whm_url)
    result = await provision_account(db, uuid.UUID(ordered["id"]), lambda server: whm)
    service = await _service(sessions, ordered["id"])
    assert result["outcome"] == "created" and service.status == "active"
    assert service.username == result["username"] and service.create_attempted_at is not None
    accounts = await _accounts_for(control, ordered["domain"])
    assert [(a["user"], a["plan"]) for a in accounts] == [(service.username, "basic")]
    again = await provision_account(db, uuid.UUID(ordered["id"]), lambda server: whm)
    assert again["outcome"] == "already_active"
    assert len(await _accounts_for(control, ordered["domain"])) == 1


async def _fail_next_createacct(control, mode: str) -> None:
    """The fake WHM's next createacct fails this way (operations.md, sandbox faults)."""
    response = await control.post("/__sandbox/faults", json={"function": "createacct", "mode": mode, "times": 1})
    assert response.status_code == 200, response.text


async def test_timeout_then_create_is_adopted_not_duplicated(client, db, sessions, settings, whm_url, whm, control):
    ordered = await _order(client, sessions, settings, whm_url)
    await _fail_next_createacct(control, "timeout_then_create")
    with pytest.raises(TransientIntegrationError) as timed_out:
        await provision_account(db, uuid.UUID(ordered["id"]), lambda server: whm)
    assert timed_out.value.code == "whm_timeout"
    assert (await _service(sessions, ordered["id"])).status == "provisioning"

    # WHM refuses the question (a permanent answer): the error says the account may be there already.
    await control.post("/__sandbox/faults", json={"function": "accountsummary", "mode": "result_0",
                                                  "reason": "Permission denied"})
    with pytest.raises(PermanentIntegrationError) as refused:
        await provision_account(db, uuid.UUID(ordered["id"]), lambda server: whm)
    assert refused.value.code == "whm_rejected" and "Permission denied" in refused.value.message
    assert "may have created the account" in refused.value.message

    result = await provision_account(db, uuid.UUID(ordered["id"]), lambda server: whm)
    assert result["outcome"] == "adopted"
    assert len(await _accounts_for(control, ordered["domain"])) == 1
    assert (await _service(sessions, ordered["id"])).status == "active"


async def test_a_verify_new_username_that_fails_leaves_nothing_in_doubt(client, db, sessions, settings, whm_url, whm,
                                                                         control):
    """No createacct went out under the chosen name: it is given back, the service holds no place on its server
    (migration 0012) and the retry creates the one account as a first attempt would."""
    ordered = await _order(client, sessions, settings, whm_url)
    await control.post("/__sandbox/faults", json={"function": "verify_new_username", "mode": "http_500", "times": 3})
    with pytest.raises(TransientIntegrationError):
        await provision_account(db, uuid.UUID(ordered["id"]), lambda server: whm)
    service = await _service(sessions, ordered["id"])
    assert (service.username, service.create_attempted_at) == (None, None)
    result = await provision_account(db, uuid.UUID(ordered["id"]), lambda server: whm)
    assert result["outcome"] == "created"
    assert [a["user"] for a in await _accounts_for(control, ordered["domain"])] == [result["username"]]


async def test_an_account_made_outside_hostq_is_not_taken_by_an_order_but_by_an_operator(
        client, db, sessions, settings, whm_url, whm, control):
    """An order naming an account WHM already has (its username and domain), made outside hostq, does not take it
    over: any reseller can read a domain and guess its username, and the account may be another reseller's or the
    server owner's. The job fails, naming `hostq jobs retry --adopt`; once an operator adopts it (the mark that a
    createacct may have made it), the next attempt adopts it, and from then on it is the service's."""
    from domain.provisioning.rules import MADE_OUTSIDE
    user = f"m{uuid.uuid4().hex[:7]}"
    ordered = await _order(client, sessions, settings, whm_url, username=user)
    await whm.createacct(username=user, domain=ordered["domain"], plan="basic", password="Xx1-long-pass",
                         contactemail="a@example.com")
    with pytest.raises(PermanentIntegrationError) as refused:
        await provision_account(db, uuid.UUID(ordered["id"]), lambda server: whm)
    assert refused.value.code == MADE_OUTSIDE and "hostq jobs retry --adopt" in refused.value.message
    assert (await _service(sessions, ordered["id"])).create_attempted_at is None

    async with session_scope(sessions) as session:  # what `hostq jobs retry --adopt` marks
        await effects.adopt_outside_account(session, SimpleNamespace(resource_id=uuid.UUID(ordered["id"])))
    result = await provision_account(db, uuid.UUID(ordered["id"]), lambda server: whm)
    assert (result["outcome"], result["username"]) == ("adopted", user)
    assert len(await _accounts_for(control, ordered["domain"])) == 1


async def test_generated_username_skips_names_taken_on_whm(client, db, sessions, settings, whm_url, whm, control):
    stem = f"q{uuid.uuid4().hex[:7]}"
    await whm.createacct(username=stem, domain=f"{stem}.other.example", plan="basic", password="Xx1-long-pass",
                         contactemail="x@example.com")
    ordered = await _order(client, sessions, settings, whm_url, domain=f"{stem}.example.com")
    result = await provision_account(db, uuid.UUID(ordered["id"]), lambda server: whm)
    assert result["username"][:8] != stem[:8]
    assert len(await _accounts_for(control, ordered["domain"])) == 1


async def test_a_server_crowded_with_the_domains_stem_still_gives_the_next_free_username(
        client, db, sessions, settings, whm_url, whm, control):
    """A reseller with many `construtora-*.com.br` customers on one server: the first 120 names of the family
    (construt, constru1..9, constr10..99, const100..119) are taken by live services, so the order gets the 121st,
    in a few statements. Walking the candidates one refused statement at a time gave up after 50."""
    region, _ = await add_region(sessions, settings, url=whm_url, capacity=1000)
    customer_id, plan = await customer_and_plan(client)
    response = await client.post("/v1/services", json=order_body(
        customer_id, plan, region, domain=f"construtora-{uuid.uuid4().hex[:8]}.com.br"))
    ordered = response.json()["service"]
    crowd = list(itertools.islice(naming.username_candidates("construtora.com.br"), 120))
    assert crowd[-1] == "const119"
    await db.execute(
        "INSERT INTO services (id, tenant_id, customer_id, plan_id, plan_code, domain, region, billing_cycle, status,"
        " username, server_id) SELECT gen_random_uuid(), tenant_id, customer_id, plan_id, plan_code,"
        " 'n' || n || '-' || domain, region, billing_cycle, 'active', u, server_id"
        " FROM services, unnest($2::text[]) WITH ORDINALITY AS t(u, n) WHERE id = $1",
        uuid.UUID(ordered["id"]), crowd)

    result = await provision_account(db, uuid.UUID(ordered["id"]), lambda server: whm)

    assert result["username"] == "const120" and result["outcome"] == "created"
    assert [a["user"] for a in await _accounts_for(control, ordered["domain"])] == ["const120"]


async def test_domain_already_on_whm_under_another_user_is_a_named_conflict(client, db, sessions, settings, whm_url,
                                                                            whm, control):
    domain = f"d{uuid.uuid4().hex[:8]}.example.com"
    await whm.createacct(username=f"z{uuid.uuid4().hex[:7]}", domain=domain, plan="basic",
                         password="Xx1-long-pass", contactemail="x@example.com")
    ordered = await _order(client, sessions, settings, whm_url, domain=domain)
    with pytest.raises(PermanentIntegrationError) as conflict:
        await provision_account(db, uuid.UUID(ordered["id"]), lambda server: whm)
    assert conflict.value.code == "whm_domain_taken"
    assert len(await _accounts_for(control, domain)) == 1  # nothing created under a new name


async def test_requested_username_taken_for_another_domain_is_refused(client, db, sessions, settings, whm_url, whm,
                                                                     control):
    user = f"r{uuid.uuid4().hex[:7]}"
    await whm.createacct(username=user, domain=f"{user}.other.example", plan="basic", password="Xx1-long-pass",
                         contactemail="x@example.com")
    ordered = await _order(client, sessions, settings, whm_url, username=user)
    with pytest.raises(PermanentIntegrationError) as conflict:
        await provision_account(db, uuid.UUID(ordered["id"]), lambda server: whm)
    assert conflict.value.code == "whm_username_taken"
    assert await _accounts_for(control, ordered["domain"]) == []


async def test_a_requested_username_whose_first_eight_clash_sends_no_createacct_and_says_why(
        client, db, sessions, settings, whm_url, whm, control):
    """WHM refuses the reseller's name because another account has its first eight characters: no account has the
    name or the domain, so nothing is ours to adopt and createacct would be refused too. The job fails with WHM's
    own reason (not a guess about a system user left behind), sends no createacct, and the place stays free."""
    stem = f"r{uuid.uuid4().hex[:7]}"
    await whm.createacct(username=f"{stem}1", domain=f"{stem}.other.example", plan="basic", password="Xx1-long-pass",
                         contactemail="x@example.com")
    ordered = await _order(client, sessions, settings, whm_url, username=f"{stem}2")
    await control.delete("/__sandbox/calls")
    with pytest.raises(PermanentIntegrationError) as refused:
        await provision_account(db, uuid.UUID(ordered["id"]), lambda server: whm)
    assert refused.value.code == "whm_username_taken"
    message = refused.value.message
    assert f"{stem}1" in message and "first eight characters" in message  # WHM's reason, naming the other account
    assert "no createacct was sent" in message and "left behind" not in message.split(". An operator")[0]
    assert "createacct" not in (await control.get("/__sandbox/calls")).json()["calls"]
    assert await _accounts_for(control, ordered["domain"]) == []
    service = await _service(sessions, ordered["id"])
    assert (service.username, service.create_attempted_at) == (f"{stem}2", None)  # kept; nothing of ours on WHM


async def test_a_system_user_left_by_a_failed_create_makes_the_retry_choose_another_name(
        client, db, sessions, settings, whm_url, whm, control):
    """WHM refused the create (an answer: nothing of ours still runs) and left its Unix user behind: the name is
    given back, and the retry creates the one account under the next free name instead of failing forever."""
    ordered = await _order(client, sessions, settings, whm_url)
    await _fail_next_createacct(control, "result_0_leave_user")
    with pytest.raises(PermanentIntegrationError) as failed:
        await provision_account(db, uuid.UUID(ordered["id"]), lambda server: whm)
    assert failed.value.code == "whm_rejected"
    left = failed.value.message.split("username ")[1].split("'")[1]
    assert "given back" in failed.value.message
    assert f"WHM now holds {left!r} with no account" in failed.value.message  # for ops to remove
    service = await _service(sessions, ordered["id"])
    assert (service.username, service.create_attempted_at) == (None, None)
    assert not await whm.verify_new_username(left)  # the Unix user holds the name

    result = await provision_account(db, uuid.UUID(ordered["id"]), lambda server: whm)
    assert result["outcome"] == "created" and result["username"] != left
    assert [a["user"] for a in await _accounts_for(control, ordered["domain"])] == [result["username"]]
    assert (await _service(sessions, ordered["id"])).username == result["username"]


async def test_a_system_user_left_after_a_create_in_doubt_is_named_never_a_second_account(
        client, db, sessions, settings, whm_url, whm, control):
    """An earlier createacct timed out (WHM may still be creating under the name), then a create left the Unix
    user behind: the name is kept, and the retry names the problem for an operator."""
    ordered = await _order(client, sessions, settings, whm_url)
    await _fail_next_createacct(control, "timeout")
    with pytest.raises(TransientIntegrationError):
        await provision_account(db, uuid.UUID(ordered["id"]), lambda server: whm)
    username = (await _service(sessions, ordered["id"])).username
    await _fail_next_createacct(control, "result_0_leave_user")
    with pytest.raises(PermanentIntegrationError) as failed:
        await provision_account(db, uuid.UUID(ordered["id"]), lambda server: whm)
    assert failed.value.code == "whm_rejected" and "given back" not in failed.value.message
    assert (await _service(sessions, ordered["id"])).create_attempted_at is not None  # still in doubt

    # An operator retries: the attempt asks WHM first (no account), createacct says the name is in use.
    with pytest.raises(PermanentIntegrationError) as retried:
        await provision_account(db, uuid.UUID(ordered["id"]), lambda server: whm)
    assert retried.value.code == "whm_username_taken", retried.value.message
    assert "system user" in retried.value.message and username in retried.value.message
    assert await _accounts_for(control, ordered["domain"]) == []  # not created under another name either
    assert (await _service(sessions, ordered["id"])).username == username

    # The operator removes the leftover system user on the server (userdel; the sandbox's control API here) and
    # retries: the account is created under the name hostq kept.
    assert username in (await control.get("/__sandbox/system-users")).json()["system_users"]
    assert (await control.delete(f"/__sandbox/system-users/{username}")).status_code == 200
    assert (await control.delete(f"/__sandbox/system-users/{username}")).status_code == 404
    result = await provision_account(db, uuid.UUID(ordered["id"]), lambda server: whm)
    assert (result["outcome"], result["username"]) == ("created", username)
    assert [a["user"] for a in await _accounts_for(control, ordered["domain"])] == [username]


@pytest.mark.parametrize("mode", ["result_0_leave_user", "result_0"])
async def test_a_requested_username_is_never_given_back(client, db, sessions, settings, whm_url, whm, control,
                                                        mode):
    """The reseller chose the name: a refused create leaves it as it is (hostq does not rename their choice). One
    that left a system user holding the name says so at once (whm_username_taken: an operator must remove it);
    a plain refusal is WHM's, and the retry creates the account under that name."""
    user = f"r{uuid.uuid4().hex[:7]}"
    ordered = await _order(client, sessions, settings, whm_url, username=user)
    await _fail_next_createacct(control, mode)
    with pytest.raises(PermanentIntegrationError) as failed:
        await provision_account(db, uuid.UUID(ordered["id"]), lambda server: whm)
    assert "given back" not in failed.value.message
    # Kept, but WHM refused its first createacct: nothing of ours exists, so the service's place is free.
    assert (await _service(sessions, ordered["id"])).create_attempted_at is None
    assert (await _service(sessions, ordered["id"])).username == user
    if mode == "result_0":
        assert failed.value.code == "whm_rejected" and "system user" not in failed.value.message
        result = await provision_account(db, uuid.UUID(ordered["id"]), lambda server: whm)
        assert (result["outcome"], result["username"]) == ("created", user)
        return
    assert failed.value.code == "whm_username_taken", failed.value.message
    assert f"WHM now holds {user!r} with no account" in failed.value.message
    with pytest.raises(PermanentIntegrationError) as retried:
        await provision_account(db, uuid.UUID(ordered["id"]), lambda server: whm)
    assert retried.value.code == "whm_username_taken", retried.value.message
    assert (await _service(sessions, ordered["id"])).username == user
    assert await _accounts_for(control, ordered["domain"]) == []


async def test_a_wrong_kek_is_a_named_permanent_error_not_a_retry(sessions, settings):
    import base64
    import secrets as pysecrets

    from domain.provisioning.models import WhmServer
    from domain.provisioning.service import server_token
    _, server_id = await add_region(sessions, settings)
    async with sessions() as session:
        server = await session.get(WhmServer, server_id)
    assert server_token(settings.require_kek(), server) == "sandbox"
    with pytest.raises(PermanentIntegrationError) as wrong:
        server_token(base64.b64decode(base64.b64encode(pysecrets.token_bytes(32))), server)
    assert wrong.value.code == "kek_mismatch" and not wrong.value.retryable


async def test_many_concurrent_orders_of_one_stem_each_find_a_name(client, sessions, settings, whm_url, whm,
                                                                    control):
    """Every order of a burst wants the same name: the races on the server's first-8 index are resolved, each
    ends with a name of its own, none gives up (a race is not a full server)."""
    region, _ = await add_region(sessions, settings, url=whm_url)
    customer_id, plan = await customer_and_plan(client)
    stem = f"s{uuid.uuid4().hex[:7]}"
    ordered = []
    for n in range(40):
        response = await client.post("/v1/services", json=order_body(customer_id, plan, region,
                                                                     domain=f"{stem}-{n}.example.com"))
        assert response.status_code == 202, response.text
        ordered.append(response.json()["service"])
    pool = SystemPool(settings.database_url, max_size=16)
    try:
        db = await pool.get()
        results = await asyncio.gather(*(provision_account(db, uuid.UUID(s["id"]), lambda server: whm)
                                         for s in ordered), return_exceptions=True)
    finally:
        await pool.close()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    users = [r["username"] for r in results]
    assert len({u[:8] for u in users}) == 40 and all(u.startswith(stem[:4]) for u in users), users
    found = [a for a in (await control.get("/__sandbox/accounts")).json()["accounts"] if a["domain"].startswith(stem)]
    assert sorted((a["user"], a["domain"]) for a in found) == sorted(zip(users, (s["domain"] for s in ordered)))


async def _create_refused(db, control, whm, ordered: dict, reason: str) -> dict:
    """The service's create attempt, WHM answering its createacct with result 0 and `reason` (a createacct sent
    up to 600 s before may still land)."""
    assert (await control.post("/__sandbox/faults", json={"function": "createacct", "mode": "result_0",
                                                          "reason": reason})).status_code == 200
    return await create_account(db, await db.fetchrow(LOAD_SERVICE, uuid.UUID(ordered["id"])), lambda server: whm,
                                create_settles_s=600)


@pytest.mark.parametrize("in_doubt", [False, True], ids=["first-create", "after-a-timeout"])
async def test_a_domain_whm_holds_outside_any_main_domain_is_a_domain_conflict(
        client, db, sessions, settings, whm_url, whm, control, in_doubt):
    """WHM refusing the domain as held by another user (an addon or parked domain, which accountsummary does not
    find by domain) is a definite domain conflict: never a leftover system user, never waited on as a create in
    doubt."""
    ordered = await _order(client, sessions, settings, whm_url)
    if in_doubt:  # a createacct timed out: a retry's refusals of the name would be waited on
        await _fail_next_createacct(control, "timeout")
        with pytest.raises(TransientIntegrationError):
            await provision_account(db, uuid.UUID(ordered["id"]), lambda server: whm)
    reason = f'The domain “{ordered["domain"]}” already exists in the userdata for the user “bob”.'  # cPanel's text
    with pytest.raises(PermanentIntegrationError) as conflict:
        await _create_refused(db, control, whm, ordered, reason)
    assert conflict.value.code == "whm_domain_taken", conflict.value.message
    assert "for another user" in conflict.value.message and "system user" not in conflict.value.message
    # who holds it is for ops (another reseller's account, maybe): in the detail, never in the reseller's message
    assert "bob" not in conflict.value.message and "“bob”" in conflict.value.detail
    assert await _accounts_for(control, ordered["domain"]) == []


@pytest.mark.parametrize("holder", ["ours", "nobody"])
async def test_a_domain_held_for_our_own_name_or_for_no_one_named_is_waited_on_while_our_create_may_run(
        client, db, sessions, settings, whm_url, whm, control, holder):
    """After a timed-out createacct, WHM refusing the domain for our own username (or naming nobody) is most likely
    that createacct still running: waited on (whm_create_in_doubt), then adopted once the account is there."""
    ordered = await _order(client, sessions, settings, whm_url)
    await _fail_next_createacct(control, "timeout")
    with pytest.raises(TransientIntegrationError):
        await provision_account(db, uuid.UUID(ordered["id"]), lambda server: whm)
    username = (await _service(sessions, ordered["id"])).username
    reason = (f'The domain “{ordered["domain"]}” already exists in the userdata for the user “{username}”.'
              if holder == "ours" else f"Sorry, a DNS entry for {ordered['domain']} already exists.")
    with pytest.raises(TransientIntegrationError) as waited:
        await _create_refused(db, control, whm, ordered, reason)
    assert waited.value.code == "whm_create_in_doubt", waited.value.message
    # the createacct lands: the next attempt adopts it
    await whm.createacct(username=username, domain=ordered["domain"], plan="basic", password="Xx1-long-pass",
                         contactemail="x@example.com")
    result = await create_account(db, await db.fetchrow(LOAD_SERVICE, uuid.UUID(ordered["id"])),
                                  lambda server: whm, create_settles_s=600)
    assert (result["outcome"], result["username"]) == ("adopted", username)
