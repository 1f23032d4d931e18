"""Suspend, unsuspend, change plan and terminate through the real processes, reflected on the fake WHM."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from hostq.client import HostqSigner
from tests.e2e.conftest import wait_until


def _done(api: httpx.Client, job_id: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job['status']}")


@pytest.fixture
def stack(procs, ports):
    region = f"l{uuid.uuid4().hex[:6]}"
    whm = f"http://127.0.0.1:{ports['whm']}"
    procs.start("whm", "sandbox", "whm", "--port", str(ports["whm"]))
    wait_until(f"{whm}/__sandbox/accounts")
    procs.run("servers", "add", "--region", region, "--url", whm, "--username", "root", "--token", "sandbox")
    creds = procs.run("tenants", "create", "--name", f"Lifecycle {region}")
    procs.start("api", "api", "--port", str(ports["api"]))
    procs.start("worker", "worker", "--region", region)
    base = f"http://127.0.0.1:{ports['api']}"
    wait_until(f"{base}/health/ready")
    with httpx.Client(base_url=base, auth=HostqSigner(creds["api_key"], creds["signing_secret"])) as api, \
            httpx.Client(base_url=whm) as fake:
        yield api, fake, region


def _account(fake: httpx.Client, domain: str) -> list[dict]:
    return [a for a in fake.get("/__sandbox/accounts").json()["accounts"] if a["domain"] == domain]


def _active_service(api: httpx.Client, region: str, name: str, packages: dict[str, str]) -> tuple[str, str]:
    """A customer, the plans (code -> WHM package), and a service on the first plan provisioned: (its id, domain)."""
    customer = api.post("/v1/customers", json={"name": name, "email": f"{name.lower()}@example.com"}).json()
    for code, package in packages.items():
        assert api.post("/v1/plans", json={"code": code, "name": code, "whm_package": package,
                                           "prices": {"monthly": 1000}}).status_code == 201
    domain = f"{name.lower()}-{uuid.uuid4().hex[:6]}.example.com"
    order = api.post("/v1/services", json={"customer_id": customer["id"], "plan": next(iter(packages)),
                                           "domain": domain, "region": region, "billing_cycle": "monthly",
                                           "provision": "now"}).json()
    assert _done(api, order["job"]["id"])["status"] == "succeeded"
    return order["service"]["id"], domain


def test_service_life_cycle_on_whm(stack):
    api, fake, region = stack
    service_id, domain = _active_service(api, region, "Bia", {"basic": "basic", "pro": "pro"})

    # Suspend, slowly, and ask twice: the second request returns the same job.
    fake.post("/__sandbox/latency", json={"function": "suspendacct", "seconds": 1})
    first = api.post(f"/v1/services/{service_id}/suspend", json={"reason": "abuse report"})
    second = api.post(f"/v1/services/{service_id}/suspend", json={"reason": "abuse report"})
    assert first.status_code == second.status_code == 202
    assert first.json()["job"]["id"] == second.json()["job"]["id"]
    assert first.json()["job"]["kind"] == "provision.suspend"
    busy = api.post(f"/v1/services/{service_id}/terminate")
    assert busy.status_code == 409 and busy.json()["code"] == "conflict"
    assert _done(api, first.json()["job"]["id"])["status"] == "succeeded"
    service = api.get(f"/v1/services/{service_id}").json()
    assert service["status"] == "suspended" and service["suspended_reason"] == "reseller"
    assert _account(fake, domain)[0]["suspended"] == 1
    again = api.post(f"/v1/services/{service_id}/suspend")
    assert again.status_code == 422 and again.json()["code"] == "invalid_state"

    job = api.post(f"/v1/services/{service_id}/unsuspend").json()["job"]
    assert _done(api, job["id"])["status"] == "succeeded"
    assert api.get(f"/v1/services/{service_id}").json()["status"] == "active"
    assert _account(fake, domain)[0]["suspended"] == 0

    changed = api.post(f"/v1/services/{service_id}/change-plan", json={"plan": "pro"})
    assert changed.status_code == 202
    assert _done(api, changed.json()["job"]["id"])["status"] == "succeeded"
    assert api.get(f"/v1/services/{service_id}").json()["plan"] == "pro"
    assert _account(fake, domain)[0]["plan"] == "pro"
    assert api.post(f"/v1/services/{service_id}/change-plan", json={"plan": "nope"}).status_code == 400

    job = api.post(f"/v1/services/{service_id}/terminate").json()["job"]
    assert _done(api, job["id"])["status"] == "succeeded"
    assert api.get(f"/v1/services/{service_id}").json()["status"] == "terminated"
    assert _account(fake, domain) == []
    assert api.post(f"/v1/services/{service_id}/unsuspend").json()["code"] == "invalid_state"
    assert api.post(f"/v1/provision/{service_id}").json()["code"] == "invalid_state"


def test_a_terminate_whose_removeacct_answer_was_lost_ends_already_removed(stack):
    api, fake, region = stack
    customer = api.post("/v1/customers", json={"name": "Caio", "email": "caio@example.com"}).json()
    api.post("/v1/plans", json={"code": "basic", "name": "basic", "whm_package": "basic", "prices": {"monthly": 1}})
    domain = f"caio-{uuid.uuid4().hex[:6]}.example.com"
    order = api.post("/v1/services", json={"customer_id": customer["id"], "plan": "basic", "domain": domain,
                                           "region": region, "billing_cycle": "monthly", "provision": "now"}).json()
    assert _done(api, order["job"]["id"])["status"] == "succeeded"
    # WHM removes the account, then the answer never comes (the client gives up after HOSTQ_WHM_READ_TIMEOUT).
    fake.post("/__sandbox/faults", json={"function": "removeacct", "mode": "timeout_then_create", "hold_s": 30})
    job = _done(api, api.post(f"/v1/services/{order['service']['id']}/terminate").json()["job"]["id"])
    assert job["status"] == "succeeded" and job["attempts"] == 2, job
    assert job["result"]["outcome"] == "already_removed"
    assert _account(fake, domain) == []
    assert api.get(f"/v1/services/{order['service']['id']}").json()["status"] == "terminated"


def test_an_account_made_outside_hostq_is_adopted_by_an_operator_then_removed_by_a_terminate(stack, procs):
    """The reseller orders an account that already exists on WHM under their username and domain: the order alone
    does not take it over (it may be anyone's); an operator's `hostq jobs retry --adopt` does, and from then on the
    service owns it, so terminating the service removes it."""
    api, fake, region = stack
    customer = api.post("/v1/customers", json={"name": "Davi", "email": "davi@example.com"}).json()
    api.post("/v1/plans", json={"code": "basic", "name": "basic", "whm_package": "basic", "prices": {"monthly": 1}})
    username, domain = f"d{uuid.uuid4().hex[:7]}", f"davi-{uuid.uuid4().hex[:6]}.example.com"
    made = fake.get("/json-api/createacct", headers={"Authorization": "whm root:sandbox"},
                    params={"api.version": 1, "username": username, "domain": domain, "plan": "basic",
                            "contactemail": "davi@example.com", "password": "Xy12345678abc"})
    assert made.json()["metadata"]["result"] == 1, made.text
    order = api.post("/v1/services", json={"customer_id": customer["id"], "plan": "basic", "domain": domain,
                                           "region": region, "billing_cycle": "monthly", "provision": "now",
                                           "username": username}).json()
    refused = _done(api, order["job"]["id"])
    assert (refused["status"], refused["error"]["code"]) == ("failed", "whm_account_made_outside"), refused
    assert api.get(f"/v1/services/{order['service']['id']}").json()["status"] == "failed"
    assert procs.run("jobs", "retry", order["job"]["id"], "--adopt") == {"retried": [order["job"]["id"]],
                                                                         "skipped": []}
    created = _done(api, order["job"]["id"])
    assert (created["status"], created["result"]["outcome"]) == ("succeeded", "adopted"), created

    job = _done(api, api.post(f"/v1/services/{order['service']['id']}/terminate").json()["job"]["id"])
    assert (job["status"], job["result"]["outcome"]) == ("succeeded", "removed"), job
    assert _account(fake, domain) == []


def test_a_plan_change_whm_refused_is_cancelled_without_force_and_changes_nothing(stack, procs):
    """WHM answers `result: 0` to a changepackage for a package it lacks: the job fails `whm_rejected` at once and,
    as nothing changed on the account, ops can cancel it without --force (one whose attempt timed out needs it)."""
    api, fake, region = stack
    service_id, domain = _active_service(api, region, "Edu", {"basic": "basic", "ghost": "ghost_package"})

    refused = _done(api, api.post(f"/v1/services/{service_id}/change-plan", json={"plan": "ghost"}).json()["job"]["id"])
    assert (refused["status"], refused["error"]["code"]) == ("failed", "whm_rejected"), refused
    assert procs.run("jobs", "cancel", refused["id"]) == {"cancelled": [refused["id"]], "skipped": []}
    assert api.get(f"/v1/jobs/{refused['id']}").json()["status"] == "cancelled"
    service = api.get(f"/v1/services/{service_id}").json()
    assert (service["status"], service["plan"]) == ("active", "basic")
    assert _account(fake, domain)[0]["plan"] == "basic"
