"""hostq with RabbitMQ as Dramatiq's broker (HOSTQ_BROKER_URL=amqp://...), through the real `hostq` processes.

The run gets a RabbitMQ virtual host of its own (tests/conftest.py `amqp_url`). Redis still holds the service
locks; the workers' heartbeats for them come from workers/heartbeat.py, since RabbitMQ keeps none.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from dataclasses import dataclass

import httpx
import pytest
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from hostq.client import HostqSigner
from tests.conftest import free_port
from tests.e2e.conftest import wait_until
from tests.e2e.helpers import GroupProcesses, accounts, calls, poll_job

HEARTBEAT_S = "3"


@dataclass
class RabbitStack:
    procs: GroupProcesses
    api: httpx.Client
    fake: httpx.Client
    region: str
    server_id: str
    customer_id: str
    amqp_url: str

    def order(self, domain: str) -> dict:
        response = self.api.post("/v1/services", json={
            "customer_id": self.customer_id, "plan": "basic", "domain": domain, "region": self.region,
            "billing_cycle": "monthly", "provision": "now"})
        assert response.status_code == 202, response.text
        return response.json()

    def service(self, service_id: str) -> dict:
        return self.api.get(f"/v1/services/{service_id}").json()

    def start_worker(self) -> None:
        self.procs.start("worker", "worker", "--region", self.region)

    def queued_in_rabbitmq(self) -> int:
        """Messages ready in the region's RabbitMQ queue (asked of RabbitMQ itself)."""
        broker = RabbitmqBroker(url=self.amqp_url)
        try:
            return broker.get_queue_message_counts(f"provisioning.{self.region}")[0]
        finally:
            broker.close()

    def fault(self, mode: str, times: int, **extra) -> None:
        response = self.fake.post("/__sandbox/faults", json={"function": "createacct", "mode": mode, "times": times,
                                                             **extra})
        assert response.status_code == 200, response.text


def _domain(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:8]}.example.com"


@pytest.fixture(scope="module")
def rabbit(hostq_cmd, test_env, settings, amqp_url, tmp_path_factory):
    """A fake WHM in a fresh region, the API, the scheduler and the region's worker, all on RabbitMQ."""
    procs = GroupProcesses(hostq_cmd, {**test_env, "HOSTQ_BROKER_URL": amqp_url, "HOSTQ_BROKER_HEARTBEAT_S": HEARTBEAT_S,
                                       # createacct may be slowed past a kill, within the client's patience
                                       "HOSTQ_WHM_CREATE_TIMEOUT": "10"},
                           tmp_path_factory.mktemp("rabbit-logs"))
    region, port_api, port_whm = f"rq{uuid.uuid4().hex[:6]}", free_port(), free_port()
    whm, base = f"http://127.0.0.1:{port_whm}", f"http://127.0.0.1:{port_api}"
    try:
        procs.start("whm", "sandbox", "whm", "--port", str(port_whm))
        procs.start("api", "api", "--port", str(port_api))
        procs.start("scheduler", "scheduler")
        server = procs.run("servers", "add", "--region", region, "--url", whm, "--username", "root",
                           "--token", "sandbox")
        creds = procs.run("tenants", "create", "--name", "Rabbit Hosting", "--rate-limit", "100000")
        for url in (f"{whm}/__sandbox/accounts", f"{base}/health/ready"):
            wait_until(url)
        with httpx.Client(base_url=base, auth=HostqSigner(creds["api_key"], creds["signing_secret"]),
                          timeout=15) as api, httpx.Client(base_url=whm, timeout=5) as fake:
            customer = api.post("/v1/customers", json={"name": "Rita", "email": "rita@example.com"})
            plan = api.post("/v1/plans", json={"code": "basic", "name": "Basic", "whm_package": "basic",
                                               "prices": {"monthly": 6990}})
            assert customer.status_code == 201 and plan.status_code == 201, (customer.text, plan.text)
            yield RabbitStack(procs, api, fake, region, server["server_id"], customer.json()["id"], amqp_url)
    finally:
        if "worker" in procs.running:
            procs.stop("worker", kill=True)
        procs.stop_all()


@pytest.fixture(autouse=True)
def running_worker(rabbit):
    """Each test starts with the region's worker running and the fake WHM without faults or latency."""
    assert rabbit.fake.delete("/__sandbox/faults").status_code == 200
    assert rabbit.fake.post("/__sandbox/latency", json={"function": "createacct", "seconds": 0}).status_code == 200
    if "worker" not in rabbit.procs.running:
        rabbit.start_worker()
    yield


def _one_account(rabbit: RabbitStack, order: dict, domain: str) -> dict:
    service = rabbit.service(order["service"]["id"])
    assert service["status"] == "active" and service["server_id"] == rabbit.server_id, service
    assert [(a["user"], a["domain"]) for a in accounts(rabbit.fake, domain)] == [(service["username"], domain)]
    return service


def test_an_order_waits_in_rabbitmq_until_a_worker_provisions_it(rabbit):
    rabbit.procs.stop("worker")
    domain = _domain("rabbit")
    order = rabbit.order(domain)

    deadline = time.monotonic() + 5
    while rabbit.queued_in_rabbitmq() < 1:  # the API sent the job to RabbitMQ, not to Redis
        assert time.monotonic() < deadline, "the job's message never reached RabbitMQ"
        time.sleep(0.05)
    assert rabbit.api.get(f"/v1/jobs/{order['job']['id']}").json()["status"] == "queued"

    rabbit.start_worker()
    job = poll_job(rabbit.api, order["job"]["id"], timeout=30)

    assert job["status"] == "succeeded", (job, rabbit.procs.log("worker"))
    assert job["attempts"] == 1 and job["result"]["outcome"] == "created", job
    _one_account(rabbit, order, domain)
    assert rabbit.queued_in_rabbitmq() == 0


def test_a_5xx_is_retried_through_rabbitmqs_delay_queue(rabbit):
    rabbit.fault("http_500", 1)
    domain = _domain("retry")
    order = rabbit.order(domain)

    job = poll_job(rabbit.api, order["job"]["id"], timeout=20)

    assert job["status"] == "succeeded", (job, rabbit.procs.log("worker"))
    assert job["attempts"] == 2 and job["result"]["outcome"] == "created", job
    _one_account(rabbit, order, domain)


def test_repeated_5xx_fail_readably_then_a_terminal_retry_creates_once(rabbit):
    rabbit.fault("http_500", 10)
    domain = _domain("outage")
    order = rabbit.order(domain)
    job_id = order["job"]["id"]

    job = poll_job(rabbit.api, job_id, timeout=20)
    assert job["status"] == "failed" and job["attempts"] == 3, (job, rabbit.procs.log("worker"))
    assert job["error"]["code"] == "whm_unavailable" and "500" in job["error"]["message"], job
    assert accounts(rabbit.fake, domain) == []

    assert rabbit.fake.delete("/__sandbox/faults").status_code == 200
    printed = rabbit.procs.run("jobs", "retry", job_id)  # `hostq jobs retry` sends through RabbitMQ too
    assert printed["retried"] == [job_id], printed
    job = poll_job(rabbit.api, job_id, timeout=20)

    assert job["status"] == "succeeded" and job["attempts"] == 1, (job, rabbit.procs.log("worker"))
    _one_account(rabbit, order, domain)


def test_a_retry_from_a_shell_without_the_brokers_url_is_left_to_the_relay(rabbit, test_env):
    rabbit.procs.stop("worker")
    rabbit.start_worker()  # the worker announces its broker as it boots
    rabbit.fault("http_500", 10)
    domain = _domain("shell")
    order = rabbit.order(domain)
    job_id = order["job"]["id"]
    assert poll_job(rabbit.api, job_id, timeout=20)["status"] == "failed"
    assert rabbit.fake.delete("/__sandbox/faults").status_code == 200

    # An operator's shell with DATABASE_URL and REDIS_URL but not HOSTQ_BROKER_URL: its broker is Redis.
    env = {k: v for k, v in rabbit.procs.env.items() if k != "HOSTQ_BROKER_URL"}
    done = subprocess.run([*rabbit.procs.hostq, "jobs", "retry", job_id], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["retried"] == [job_id]
    assert "the workers consume amqp://" in done.stderr and "left to the scheduler's relay" in done.stderr, done.stderr

    job = poll_job(rabbit.api, job_id, timeout=20)  # the scheduler, on RabbitMQ, sent it
    assert job["status"] == "succeeded" and job["attempts"] == 1, (job, rabbit.procs.log("scheduler"))
    _one_account(rabbit, order, domain)
    client = redis.Redis.from_url(test_env["REDIS_URL"])
    try:  # nothing went to Redis, where no worker of this region listens
        assert client.llen(f"{test_env['HOSTQ_NAMESPACE']}:dramatiq:provisioning.{rabbit.region}") == 0
    finally:
        client.close()


def test_a_worker_killed_mid_createacct_is_redelivered_by_rabbitmq_and_creates_once(rabbit, capsys):
    # Long enough to kill the worker mid-createacct; short enough that the account usually exists by the time the
    # restarted worker's attempt asks for it (the test's jobs have 3 attempts, 0.05-0.2 s apart).
    assert rabbit.fake.post("/__sandbox/latency", json={"function": "createacct", "seconds": 1.0}).status_code == 200
    domain = _domain("crash")
    order = rabbit.order(domain)
    job_id = order["job"]["id"]
    before = calls(rabbit.fake, "createacct")
    deadline = time.monotonic() + 20
    while calls(rabbit.fake, "createacct") <= before:  # the first createacct is on the wire
        assert time.monotonic() < deadline, "createacct never reached the fake WHM"
        time.sleep(0.02)

    group = rabbit.procs.group("worker")
    assert len(group) >= 2, f"expected the dramatiq parent and its forked worker, got {group}"
    rabbit.procs.stop("worker", kill=True)
    killed_at = time.monotonic()
    leftovers = subprocess.run(["ps", "-o", "pid=", "-p", ",".join(map(str, group))], capture_output=True,
                               text=True, check=False).stdout.split()
    assert leftovers == [], f"worker processes survived the SIGKILL: {leftovers}"
    assert rabbit.api.get(f"/v1/jobs/{job_id}").json()["status"] == "running"

    rabbit.start_worker()
    job = poll_job(rabbit.api, job_id, timeout=40)
    with capsys.disabled():
        print(f"\n[rabbitmq crash] SIGKILL -> job {job['status']} after {time.monotonic() - killed_at:.1f} s, "
              f"{job['attempts']} attempts (worker restart and the dead holder's lock included)")

    assert job["status"] == "succeeded", (job, rabbit.procs.log("worker"))
    # RabbitMQ redelivers at once: the next attempt may come while WHM still makes the account (the name in use,
    # no account yet: whm_create_in_doubt, retried), and a later one adopts it.
    assert job["attempts"] in (2, 3) and job["result"]["outcome"] == "adopted", job
    if job["attempts"] == 3:
        history = rabbit.procs.run("jobs", "show", job_id)["history"]
        assert [(a["attempt"], (a["error"] or {}).get("code")) for a in history] == [
            (1, "worker_lost"), (2, "whm_create_in_doubt"), (3, None)], history
    _one_account(rabbit, order, domain)
