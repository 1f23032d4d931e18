"""WhmClient against the fake WHM, over real sockets so timeouts and resets are real."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import httpx
import pytest
import uvicorn

from domain.errors import PermanentIntegrationError, TransientIntegrationError
from hostq.sandbox.whm import create_app
from workers.integrations.whm import WhmAccountExists, WhmAuthError, WhmClient

NEW = {"password": "s3cret-Pass", "contactemail": "ops@alice.example"}


class Swappable:
    """One server for the module, a fresh fake behind it for every test."""

    app = create_app()

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def server():
    holder = Swappable()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(holder, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=1)
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not uv.started:
        time.sleep(0.01)
    yield holder, "http://127.0.0.1:%d" % sock.getsockname()[1]
    uv.should_exit = True
    thread.join(5)


@pytest.fixture
async def fake(server):
    holder, url = server
    holder.app = create_app(token="sandbox")
    async with httpx.AsyncClient(base_url=url) as control:
        yield control


@pytest.fixture
async def whm(server):
    async with WhmClient(server[1], "root", "sandbox", create_timeout=0.5, read_timeout=2.0) as client:
        yield client


async def accounts(fake) -> list[dict]:
    return (await fake.get("/__sandbox/accounts")).json()["accounts"]


async def fault(fake, function: str, mode: str, **extra) -> None:
    (await fake.post("/__sandbox/faults", json={"function": function, "mode": mode, **extra})).raise_for_status()


async def test_create_then_adopt_by_accountsummary(fake, whm):
    data = await whm.createacct(username="alice", domain="alice.example", plan="pro", **NEW)
    assert data["package"] == "pro" and data["ip"]
    found = await whm.accountsummary(user="alice")
    assert (found["user"], found["domain"], found["plan"], found["suspended"]) == ("alice", "alice.example", "pro", 0)
    assert (await whm.accountsummary(domain="alice.example"))["user"] == "alice"
    assert await whm.accountsummary(user="ghost") is None
    assert await whm.verify_new_username("alice") is False
    assert await whm.verify_new_username("bob") is True
    assert [a["user"] for a in await whm.listaccts("alice.example", searchtype="domain")] == ["alice"]
    assert [p["name"] for p in await whm.listpkgs()] == ["default", "basic", "pro"]


@pytest.mark.parametrize(
    ("username", "domain", "expected"),
    [
        ("alice", "other.example", 'This system already has an account named "alice".'),
        ("bob", "alice.example", 'The domain "alice.example" already exists in the userdata for the user "alice".'),
    ],
)
async def test_taken_name_or_domain_raises_account_exists(fake, whm, username, domain, expected):
    await whm.createacct(username="alice", domain="alice.example", plan="basic", **NEW)
    with pytest.raises(WhmAccountExists) as caught:
        await whm.createacct(username=username, domain=domain, plan="basic", **NEW)
    assert caught.value.message == expected


async def test_unknown_package_is_rejected(fake, whm):
    with pytest.raises(PermanentIntegrationError) as caught:
        await whm.createacct(username="alice", domain="alice.example", plan="gold", **NEW)
    assert caught.value.code == "whm_rejected"
    assert await accounts(fake) == []


async def test_wrong_token_fails_once_and_keeps_the_token_secret(fake, server):
    async with WhmClient(server[1], "root", "not-the-token") as bad:
        with pytest.raises(WhmAuthError) as caught:
            await bad.listpkgs()
    assert caught.value.code == "whm_auth_failed"
    assert "not-the-token" not in str(caught.value)
    assert (await fake.get("/__sandbox/calls")).json()["calls"] == {"listpkgs": 1}


async def test_http_500_is_unavailable(fake, whm):
    await fault(fake, "createacct", "http_500")
    with pytest.raises(TransientIntegrationError) as caught:
        await whm.createacct(username="alice", domain="alice.example", plan="pro", **NEW)
    assert caught.value.code == "whm_unavailable" and "HTTP 500" in caught.value.message


async def test_reset_drops_the_connection_without_a_response(fake, whm, server):
    await fault(fake, "createacct", "reset")
    with pytest.raises(TransientIntegrationError) as caught:
        await whm.createacct(username="alice", domain="alice.example", plan="pro", **NEW)
    assert caught.value.code == "whm_unavailable" and "HTTP" not in caught.value.message
    await fault(fake, "listpkgs", "reset")
    with pytest.raises(httpx.TransportError):
        await fake.get(server[1] + "/json-api/listpkgs?api.version=1", headers={"Authorization": "whm root:sandbox"})


async def test_a_reset_mutation_is_not_sent_again(fake, whm):
    await whm.createacct(username="alice", domain="alice.example", plan="pro", **NEW)
    await fault(fake, "suspendacct", "reset")
    with pytest.raises(TransientIntegrationError) as caught:
        await whm.suspendacct("alice", "unpaid")  # a GET, which some clients resend on their own
    assert caught.value.code == "whm_unavailable"
    assert (await fake.get("/__sandbox/calls")).json()["calls"] == {"createacct": 1, "suspendacct": 1}


async def test_read_calls_survive_one_reset(fake, whm):
    await fault(fake, "listpkgs", "reset")
    assert len(await whm.listpkgs()) == 3
    assert (await fake.get("/__sandbox/calls")).json()["calls"] == {"listpkgs": 2}


async def test_timeout_is_quick_and_does_not_block_the_server(fake, whm):
    await fault(fake, "createacct", "timeout", hold_s=600)
    started = time.monotonic()
    create = asyncio.create_task(whm.createacct(username="alice", domain="alice.example", plan="pro", **NEW))
    await asyncio.sleep(0.1)
    assert len(await whm.listpkgs()) == 3  # served while createacct is held
    with pytest.raises(TransientIntegrationError) as caught:
        await create
    assert caught.value.code == "whm_timeout"
    assert time.monotonic() - started < 1.5
    assert await accounts(fake) == []


async def test_timeout_then_create_leaves_an_account_to_adopt(fake, whm):
    await fault(fake, "createacct", "timeout_then_create")
    with pytest.raises(TransientIntegrationError) as caught:
        await whm.createacct(username="alice", domain="alice.example", plan="pro", **NEW)
    assert caught.value.code == "whm_timeout"
    assert (await whm.accountsummary(user="alice"))["domain"] == "alice.example"
    assert (await fake.get("/__sandbox/faults")).json()["faults"] == []


async def test_result_0_fault_carries_its_reason(fake, whm):
    await fault(fake, "suspendacct", "result_0", reason="Could not write the suspension file.", times=2)
    await whm.createacct(username="alice", domain="alice.example", plan="pro", **NEW)
    for _ in range(2):
        with pytest.raises(PermanentIntegrationError, match="suspension file"):
            await whm.suspendacct("alice", "unpaid")
    await whm.suspendacct("alice", "unpaid")


async def test_lifecycle_shows_in_the_sandbox(fake, whm):
    await whm.createacct(username="alice", domain="alice.example", plan="basic", **NEW)
    await whm.suspendacct("alice", "unpaid invoice")
    assert (await whm.accountsummary(user="alice"))["suspendreason"] == "unpaid invoice"
    assert (await accounts(fake))[0]["suspended"] == 1
    await whm.unsuspendacct("alice")
    await whm.changepackage("alice", "pro")
    await whm.passwd("alice", "n3w-Pass")
    [account] = await accounts(fake)
    assert (account["suspended"], account["plan"]) == (0, "pro")
    assert account["created_at"].endswith("Z")
    await whm.removeacct("alice")
    assert await accounts(fake) == []
    with pytest.raises(PermanentIntegrationError):
        await whm.suspendacct("alice")


async def test_latency_is_applied_and_cleared(fake, whm):
    await fake.post("/__sandbox/latency", json={"function": "listpkgs", "seconds": 0.3})
    started = time.monotonic()
    await whm.listpkgs()
    assert time.monotonic() - started >= 0.3
    await fake.post("/__sandbox/latency", json={"function": "listpkgs", "seconds": 0})
    started = time.monotonic()
    await whm.listpkgs()
    assert time.monotonic() - started < 0.2


async def test_the_control_api_refuses_what_it_cannot_do(fake):
    """A typo in a test's fault must not pass as a fault that never fires."""
    before = (await fake.get("/__sandbox/faults")).json()
    for path, body in (("faults", {"function": "createact", "mode": "http_500"}),
                       ("faults", {"function": "createacct", "mode": "http_500", "times": 0}),
                       ("faults", {"function": "createacct", "mode": "http_500", "times": 1.5}),
                       ("faults", {"function": "createacct", "mode": "timeout", "hold_s": -5}),
                       ("faults", {"function": "createacct", "mode": "boom"}),
                       ("latency", {"function": "createacct", "seconds": -1}),
                       ("latency", {"function": "createacct", "seconds": 1e308}),  # a call, and its name, held for good
                       ("faults", {"function": "createacct", "mode": "timeout", "hold_s": 86_401}),
                       ("latency", {"function": "createacct"}),
                       ("latency", {"function": "nope", "seconds": 1}),
                       ("faults", {"function": "createacct", "mode": "http_500", "tiems": 3}),
                       ("latency", {"function": "createacct", "seconds": 1, "times": 2})):
        refused = await fake.post(f"/__sandbox/{path}", json=body)
        assert refused.status_code == 400 and refused.json()["error"], (path, body, refused.text)
    assert (await fake.get("/__sandbox/faults")).json() == before


async def test_a_fake_with_a_state_file_keeps_its_accounts_when_started_again(server, whm, tmp_path):
    holder, url = server
    state = tmp_path / "whm.json"
    holder.app = create_app(token="sandbox", state_path=state)
    await whm.createacct(username="alice", domain="alice.example", plan="basic", **NEW)
    await whm.createacct(username="robertson", domain="bob.example", plan="basic", **NEW)
    await whm.suspendacct("alice", "abuse")
    await whm.changepackage("robertson", "pro")
    await whm.createacct(username="carol", domain="carol.example", plan="basic", **NEW)
    await whm.removeacct("carol")
    async with httpx.AsyncClient(base_url=url) as control:
        await fault(control, "createacct", "result_0_leave_user")
    with pytest.raises(PermanentIntegrationError):
        await whm.createacct(username="dave", domain="dave.example", plan="basic", **NEW)
    before = (await whm.accountsummary(user="alice"))

    holder.app = create_app(token="sandbox", state_path=state)  # the fake started again on the same file
    assert {(a["user"], a["plan"], a["suspended"]) for a in await whm.listaccts()} == {
        ("alice", "basic", 1), ("robertson", "pro", 0)}
    assert await whm.accountsummary(user="alice") == before
    assert await whm.verify_new_username("robertsox") is False  # its first 8 still taken
    assert await whm.verify_new_username("dave") is False  # the system user the failed create left
    with pytest.raises(WhmAccountExists):
        await whm.createacct(username="other", domain="bob.example", plan="basic", **NEW)
    assert not list(tmp_path.glob("*.partial"))

    async with httpx.AsyncClient(base_url=url) as control:  # emptied on purpose: empty when started again
        assert (await control.delete("/__sandbox/accounts")).status_code == 200
    holder.app = create_app(token="sandbox", state_path=state)
    assert await whm.listaccts() == []


def test_a_state_file_the_fake_did_not_write_stops_it_with_one_line(tmp_path):
    state = tmp_path / "whm.json"
    state.write_text('{"accounts": [{"user": "x"}]}')
    with pytest.raises(ValueError, match="is not one it wrote"):
        create_app(state_path=state)


def test_a_state_file_the_fake_cannot_write_stops_it_with_one_line(tmp_path):
    """Not a fake that starts, then answers every change with a 500 after making it."""
    with pytest.raises(ValueError, match="cannot write its state file .*missing/whm.json: No such file"):
        create_app(state_path=tmp_path / "missing" / "whm.json")


async def _call(url: str, function: str, **params) -> dict:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": "whm root:sandbox"}) as client:
        answer = await client.get(f"/json-api/{function}", params={"api.version": 1, **params})
        answer.raise_for_status()
        return answer.json()


async def test_listaccts_searches_as_whm_does(fake, whm, server):
    """regex (WHM's default) finds the pattern anywhere in the value; exact, only the whole value; ip too."""
    await whm.createacct(username="alice", domain="alice.example", plan="basic", **NEW)
    await whm.createacct(username="malicia", domain="malicia.example", plan="pro", **NEW)
    users = lambda answer: sorted(a["user"] for a in answer["data"]["acct"])  # noqa: E731
    assert users(await _call(server[1], "listaccts", search="lic", searchtype="user")) == ["alice", "malicia"]
    assert users(await _call(server[1], "listaccts", search="^ali", searchtype="user", searchmethod="regex")) == [
        "alice"]
    assert users(await _call(server[1], "listaccts", search="alic", searchtype="user", searchmethod="exact")) == []
    assert users(await _call(server[1], "listaccts", search="pro", searchtype="package")) == ["malicia"]
    assert users(await _call(server[1], "listaccts", search="192.0.2.10", searchtype="ip",
                             searchmethod="exact")) == ["alice", "malicia"]
    refused = await _call(server[1], "listaccts", search="x", searchtype="colour")
    assert refused["metadata"]["result"] == 0 and "searchtype" in refused["metadata"]["reason"]


async def test_names_a_cpanel_server_keeps_for_itself_are_refused(fake, whm):
    for name in ("root", "nobody", "mysql", "cpanel", "all"):
        assert await whm.verify_new_username(name) is False, name
    assert await whm.verify_new_username("rooted") is True


async def test_the_functions_on_one_account_take_its_user_not_its_domain(fake, whm, server):
    await whm.createacct(username="alice", domain="alice.example", plan="basic", **NEW)
    assert (await whm.accountsummary(domain="alice.example"))["user"] == "alice"  # accountsummary does
    for function in ("suspendacct", "unsuspendacct", "changepackage", "removeacct"):
        answer = await _call(server[1], function, domain="alice.example", pkg="pro")
        assert answer["metadata"]["result"] == 0, (function, answer)
        assert "parameter is required" in answer["metadata"]["reason"], answer
    assert (await _call(server[1], "removeacct"))["metadata"]["reason"] == "The “username” parameter is required."
    assert [a["user"] for a in await whm.listaccts()] == ["alice"]


async def test_a_refused_token_gets_whms_json_body(fake, server):
    async with httpx.AsyncClient(base_url=server[1], headers={"Authorization": "whm root:wrong"}) as client:
        answer = await client.get("/json-api/listpkgs", params={"api.version": 1})
    assert answer.status_code == 403
    assert answer.json()["cpanelresult"]["data"] == {"reason": "Access denied", "result": "0"}


async def test_a_failed_create_leaves_a_user_only_where_it_could_have_made_one(fake, whm):
    await whm.createacct(username="alice", domain="alice.example", plan="basic", **NEW)
    for name in ("alice", "1bad"):  # an account already has it; not a valid name
        await fault(fake, "createacct", "result_0_leave_user")
        with pytest.raises(PermanentIntegrationError):
            await whm.createacct(username=name, domain=f"x{name}.example", plan="basic", **NEW)
    assert (await fake.get("/__sandbox/system-users")).json()["system_users"] == []
    await whm.removeacct("alice")
    assert await whm.verify_new_username("alice") is True



async def test_a_slow_create_takes_its_name_and_domain_at_once_and_makes_the_account_at_the_end(fake, server):
    """As WHM does: while a createacct runs, its system user exists (the name is in use) but its account not yet."""
    await fake.post("/__sandbox/latency", json={"function": "createacct", "seconds": 0.5})
    async with WhmClient(server[1], "root", "sandbox", create_timeout=5, read_timeout=2) as slow:
        first = asyncio.ensure_future(slow.createacct(username="alicelong", domain="alice.example", plan="basic",
                                                      **NEW))
        await asyncio.sleep(0.15)
        assert await slow.verify_new_username("alicelong") is False
        assert await slow.accountsummary(user="alicelong") is None
        for username, domain, said in (
                ("alicelong", "other.example", "is in use by an existing system user"),
                ("alicelonx", "alice2.example", "first eight characters"),
                ("bob", "alice.example", 'already exists in the userdata for the user "alicelong"')):
            started = time.monotonic()
            with pytest.raises(PermanentIntegrationError) as caught:
                await slow.createacct(username=username, domain=domain, plan="basic", **NEW)
            assert said in caught.value.message, caught.value.message
            assert time.monotonic() - started < 0.3  # refused at once: the latency is the making of an account
        await first
    assert [(a["user"], a["domain"]) for a in await accounts(fake)] == [("alicelong", "alice.example")]


async def test_a_create_retried_while_its_timed_out_createacct_still_runs_waits_then_adopts(
        fake, server, client, sessions, settings):
    """The trap of integrations.md, with WHM slower than the client's wait: attempt 1 times out while WHM goes on;
    attempt 2 finds no account but the name in use, and waits (whm_create_in_doubt) rather than calling it a
    leftover system user; attempt 3, once WHM is done, adopts the account. One account."""
    from domain.provisioning import accounts as provisioning
    from tests.integration.helpers import add_region, customer_and_plan, order_body
    from workers.pg import SystemPool
    import uuid

    await fake.post("/__sandbox/latency", json={"function": "createacct", "seconds": 0.8})
    region, _ = await add_region(sessions, settings)
    customer_id, plan = await customer_and_plan(client)
    order = (await client.post("/v1/services", json=order_body(customer_id, plan, region))).json()
    service_id = uuid.UUID(order["service"]["id"])
    pool = SystemPool(settings.database_url, max_size=2)
    outcomes = []
    try:
        db = await pool.get()
        async with WhmClient(server[1], "root", "sandbox", create_timeout=0.3, read_timeout=2) as whm:
            for pause in (0, 0, 1.0):
                await asyncio.sleep(pause)
                try:
                    outcomes.append((await provisioning.create_account(
                        db, await db.fetchrow(provisioning.LOAD_SERVICE, service_id), lambda server: whm,
                        create_settles_s=60.0))["outcome"])
                except (TransientIntegrationError, PermanentIntegrationError) as exc:
                    outcomes.append(exc.code)
    finally:
        await pool.close()
    assert outcomes == ["whm_timeout", "whm_create_in_doubt", "adopted"]
    assert len([a for a in await accounts(fake) if a["domain"] == order["service"]["domain"]]) == 1
