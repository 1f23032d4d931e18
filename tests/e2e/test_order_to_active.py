"""A reseller's signed order becomes a WHM account, through the real processes."""

from __future__ import annotations

import time
import uuid

import httpx

from hostq.client import HostqSigner
from tests.e2e.conftest import wait_until


def _poll_job(client: httpx.Client, location: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(location).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job still {job['status']} after {timeout} s")


def test_signed_order_provisions_one_account(procs, ports):
    region = f"e{uuid.uuid4().hex[:6]}"
    procs.run("db", "upgrade")
    procs.start("whm", "sandbox", "whm", "--port", str(ports["whm"]))
    wait_until(f"http://127.0.0.1:{ports['whm']}/__sandbox/accounts")
    server = procs.run("servers", "add", "--region", region, "--url", f"http://127.0.0.1:{ports['whm']}",
                       "--username", "root", "--token", "sandbox")
    creds = procs.run("tenants", "create", "--name", "E2E Hosting")
    procs.start("api", "api", "--port", str(ports["api"]))
    procs.start("worker", "worker", "--region", region)
    procs.start("scheduler", "scheduler")
    base = f"http://127.0.0.1:{ports['api']}"
    wait_until(f"{base}/health/ready")

    assert httpx.post(f"{base}/v1/customers", json={"name": "Ana", "email": "ana@example.com"}).status_code == 401
    with httpx.Client(base_url=base, auth=HostqSigner(creds["api_key"], creds["signing_secret"])) as api:
        customer = api.post("/v1/customers", json={"name": "Ana", "email": "ana@example.com"})
        assert customer.status_code == 201
        plan = api.post("/v1/plans", json={"code": "basic", "name": "Basic", "whm_package": "basic",
                                           "prices": {"monthly": 6990}})
        assert plan.status_code == 201
        domain = f"ana-{uuid.uuid4().hex[:6]}.example.com"
        order = api.post("/v1/services", json={"customer_id": customer.json()["id"], "plan": "basic",
                                               "domain": domain, "region": region, "billing_cycle": "monthly",
                                               "provision": "now"})
        assert order.status_code == 202, order.text
        job = _poll_job(api, order.headers["location"])
        assert job["status"] == "succeeded", (job, procs.log("worker"))
        assert job["attempts"] == 1 and job["result"]["outcome"] == "created"
        service = api.get(f"/v1/services/{order.json()['service']['id']}").json()

    assert service["status"] == "active" and service["server_id"] == server["server_id"]
    accounts = httpx.get(f"http://127.0.0.1:{ports['whm']}/__sandbox/accounts").json()["accounts"]
    assert [(a["user"], a["domain"]) for a in accounts] == [(service["username"], domain)]
