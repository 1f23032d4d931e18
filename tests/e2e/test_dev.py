"""`hostq dev` (the README's run command) as a tester uses it: a worker killed with `kill -9` mid-createacct is
started again while the fake WHM, and the accounts it holds, go on; its fakes of an earlier run are re-pointed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import smtplib
import subprocess
import time
import uuid

import httpx
import redis

from domain.migrate import drop_database, upgrade
from domain.pg import connect
from domain.settings import load_settings
from domain.provisioning.service import add_server
from domain.tenants.service import create_tenant
from hostq.admin import in_transaction, register_sandboxes
from hostq.client import HostqSigner
from tests.conftest import BASE_DB, REDIS_URL, RUN, free_port
from tests.e2e.helpers import accounts, group_alive, poll_job


def _credentials(log, dev: subprocess.Popen, timeout: float = 90) -> dict:
    """The demo tenant's credentials from the banner `hostq dev` prints once everything is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert dev.poll() is None, log.read_text()
        lines = log.read_text().splitlines()
        for n, line in enumerate(lines[:-1]):
            if line.startswith("Demo tenant credentials"):
                return json.loads(lines[n + 1])
        time.sleep(0.2)
    raise AssertionError(f"no banner after {timeout} s:\n{log.read_text()}")


def _children(pid: int, pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid), "-f", pattern], capture_output=True, text=True).stdout
    return [int(p) for p in found.split()]


def _answers(fake: httpx.Client) -> bool:
    try:
        return fake.get("/__sandbox/accounts").status_code == 200
    except httpx.TransportError:
        return False


def _wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what} not within {timeout} s")


async def _job_status(database_url: str, job_id: str) -> str:
    conn = await connect(database_url)
    try:
        return await conn.fetchval("SELECT status FROM jobs WHERE id = $1", uuid.UUID(job_id))
    finally:
        await conn.close()


def test_dev_restarts_a_killed_worker_and_keeps_the_fake_whm(hostq_cmd, test_env, tmp_path):
    env = {**test_env, "DATABASE_URL": f"{BASE_DB}/hostq_test_{RUN}_dev",
           "HOSTQ_NAMESPACE": f"{test_env['HOSTQ_NAMESPACE']}-dev", "HOSTQ_BROKER_HEARTBEAT_S": "3",
           "HOSTQ_WHM_CREATE_TIMEOUT": "10"}  # longer than the createacct latency of the stop below
    port_api, port_whm, port_psp, port_smtp, port_mail = (free_port() for _ in range(5))
    whm = f"http://127.0.0.1:{port_whm}"
    log = tmp_path / "dev.log"
    dev = None
    try:
        # Earlier runs' fakes: region us on another port (twice, as hostq once added them), and region zz that
        # this run does not start.
        upgrade(env["DATABASE_URL"])
        earlier = load_settings(env)
        asyncio.run(register_sandboxes(earlier, {"us": f"http://127.0.0.1:{free_port()}",
                                                 "zz": f"http://127.0.0.1:{free_port()}"}))
        asyncio.run(in_transaction(earlier, lambda session: add_server(
            session, earlier.require_kek(), region="us", url=f"http://127.0.0.1:{free_port()}", username="root",
            token="sandbox", name="sandbox-us")))
        # A tenant whose key an earlier hostq dev sealed under another KEK (started from another directory).
        asyncio.run(in_transaction(earlier, lambda session: create_tenant(session, os.urandom(32), name="Elsewhere")))
        with open(log, "w") as out:
            dev = subprocess.Popen([*hostq_cmd, "dev", "--port", str(port_api), "--whm-port", str(port_whm),
                                    "--psp-port", str(port_psp), "--smtp-port", str(port_smtp),
                                    "--mail-port", str(port_mail), "--regions", "us"], env={**os.environ, **env},
                                   cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        creds = _credentials(log, dev)
        listed = subprocess.run([*hostq_cmd, "servers", "list"], env={**os.environ, **env}, capture_output=True,
                                text=True, timeout=60)
        servers = sorted((line["name"], line["enabled"], line["url"])
                         for line in map(json.loads, listed.stdout.splitlines()))
        assert [(name, enabled) for name, enabled, _ in servers] == [
            ("sandbox-us", False), ("sandbox-us", True), ("sandbox-zz", False)], listed.stdout
        assert ("sandbox-us", True, whm) in servers  # the one taking orders is this run's fake
        [ours] = [line["server_id"] for line in map(json.loads, listed.stdout.splitlines()) if line["enabled"]]
        assert "disabled fake WHM servers of earlier runs in region(s) us, zz" in log.read_text()
        assert "1 API key(s) and 0 WHM server(s) in this database were sealed with another HOSTQ_KEK" \
            in log.read_text()

        with httpx.Client(base_url=f"http://127.0.0.1:{port_api}", timeout=15,
                          auth=HostqSigner(creds["api_key"], creds["signing_secret"])) as api, \
                httpx.Client(base_url=whm, timeout=5) as fake:
            customer = api.post("/v1/customers", json={"name": "Ana", "email": "ana@example.com"}).json()
            assert api.post("/v1/plans", json={"code": "basic", "name": "Basic", "whm_package": "basic",
                                               "prices": {"monthly": 6990}}).status_code == 201

            def order(domain: str) -> dict:
                answer = api.post("/v1/services", json={"customer_id": customer["id"], "plan": "basic",
                                                        "domain": domain, "region": "us",
                                                        "billing_cycle": "monthly", "provision": "now"})
                assert answer.status_code == 202, answer.text
                return answer.json()["job"]

            first = f"first-{uuid.uuid4().hex[:6]}.example.com"
            assert poll_job(api, order(first)["id"])["status"] == "succeeded"
            assert fake.post("/__sandbox/latency", json={"function": "createacct", "seconds": 1.5}).status_code == 200
            second = f"second-{uuid.uuid4().hex[:6]}.example.com"
            job = order(second)
            poll_job(api, job["id"], until=("running",))
            [worker] = _children(dev.pid, "provisioning.us")
            os.killpg(worker, signal.SIGKILL)  # the region's worker, mid-createacct, and every process it forked

            restarted = _wait_for(lambda: [p for p in _children(dev.pid, "provisioning.us") if p != worker], 30,
                                  "a new worker of region us")
            done = poll_job(api, job["id"], timeout=60)
            assert done["status"] == "succeeded", done
            assert dev.poll() is None
            # The fake was never restarted: it still holds the first account, and the second exactly once.
            assert sorted(a["domain"] for a in accounts(fake)) == sorted([first, second])
            assert "the worker of region us exited (code" in log.read_text()
            assert restarted != [worker]

            # The fake WHM killed in turn is started again with its accounts (kept in .hostq/sandbox), so a
            # service made before can still be suspended.
            [fake_pid] = _children(dev.pid, "sandbox whm")
            os.killpg(fake_pid, signal.SIGKILL)
            _wait_for(lambda: [p for p in _children(dev.pid, "sandbox whm") if p != fake_pid], 30, "a new fake WHM")
            _wait_for(lambda: _answers(fake), 30, "the new fake WHM answering")
            assert sorted(a["domain"] for a in accounts(fake)) == sorted([first, second])
            service_id = done["resource"]["id"]
            suspended = api.post(f"/v1/services/{service_id}/suspend", json={"reason": "abuse"})
            assert suspended.status_code == 202, suspended.text
            assert poll_job(api, suspended.json()["job"]["id"])["status"] == "succeeded"
            assert [a["suspended"] for a in accounts(fake) if a["domain"] == second] == [1]

            # The fake PSP runs beside them, its charges kept in the same directory.
            txid = "devcharge" + uuid.uuid4().hex[:20]
            charge = httpx.put(f"http://127.0.0.1:{port_psp}/v2/cob/{txid}", timeout=5, json={
                "valor": {"original": "69.90"}, "chave": "pix@demo.example"})
            assert charge.status_code == 201 and charge.json()["status"] == "ATIVA", charge.text
            assert f"fake PSP     http://127.0.0.1:{port_psp}" in log.read_text()
            assert sorted(p.name for p in (tmp_path / ".hostq" / "sandbox").iterdir()) == [
                "psp.json", f"whm-{ours}.json", f"whm-{ours}.json.journal"]
            # And the fake mail server.
            with smtplib.SMTP("127.0.0.1", port_smtp, timeout=10) as smtp:
                smtp.sendmail("billing@demo.example", ["ana@example.com"], b"Subject: hello\r\n\r\nhi Ana\r\n")
            messages = httpx.get(f"http://127.0.0.1:{port_mail}/__sandbox/messages", timeout=5).json()["messages"]
            assert [(m["subject"], m["to"]) for m in messages] == [("hello", ["ana@example.com"])]
            assert f"fake mail    smtp://127.0.0.1:{port_smtp}" in log.read_text()

            # A hangup (the terminal closed) stops everything as SIGTERM does, hostq's processes before the
            # fakes: a createacct in flight is answered, and its job ends before the worker does.
            assert fake.post("/__sandbox/latency", json={"function": "createacct", "seconds": 4}).status_code == 200
            last = order(f"last-{uuid.uuid4().hex[:6]}.example.com")
            poll_job(api, last["id"], until=("running",))
            groups = _children(dev.pid, "hostq")
            dev.send_signal(signal.SIGHUP)
            assert dev.wait(timeout=60) == 0, log.read_text()
            assert [pgid for pgid in groups if group_alive(pgid)] == []
            assert asyncio.run(_job_status(env["DATABASE_URL"], last["id"])) == "succeeded"
    finally:
        if dev is not None and dev.poll() is None:
            dev.send_signal(signal.SIGTERM)
            dev.wait(timeout=60)
            assert not group_alive(dev.pid)
        asyncio.run(drop_database(env["DATABASE_URL"]))
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(match=f"{env['HOSTQ_NAMESPACE']}*", count=1000):
            client.delete(key)
        client.close()
