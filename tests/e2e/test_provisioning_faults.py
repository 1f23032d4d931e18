"""Provisioning under WHM faults, crashes, load and region outages, through the real `hostq` processes.

Every test holds the jobs' outcomes against the fake WHM's own account list: no duplicate account, no
lost job, and an error code a person can read when a job gives up.

On Redis by default; `HOSTQ_TEST_BROKER=rabbitmq` runs this module and test_chaos.py with the jobs on
RabbitMQ instead (a vhost of the run's own, tests/conftest.py `amqp_url`), except the two tests that take
messages out of Redis by hand.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
import redis

from domain.pg import plain_dsn
from hostq.client import HostqSigner
from tests.conftest import free_port
from tests.e2e.conftest import wait_until
from tests.e2e.helpers import FINISHED, GroupProcesses, accounts, calls, poll_job

# Seconds without a heartbeat before a dead worker's messages go back to the queue (default 30).
HEARTBEAT_S = "3"
ON_RABBITMQ = os.environ.get("HOSTQ_TEST_BROKER", "redis") == "rabbitmq"
needs_redis_broker = pytest.mark.skipif(ON_RABBITMQ, reason="takes the job's messages out of Redis by hand")


def _region(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def _domain(stem: str = "shop") -> str:
    return f"{stem}-{uuid.uuid4().hex[:8]}.example.com"


@dataclass
class Stack:
    procs: GroupProcesses
    api: httpx.Client
    fake_a: httpx.Client
    fake_b: httpx.Client
    region_a: str
    region_b: str
    server_a: str
    server_b: str
    customer_id: str
    hostq_cmd: list

    def order(self, domain: str, region: str | None = None) -> dict:
        """Place a signed order provisioned at once; return {"job", "service"} of the 202."""
        response = self.api.post("/v1/services", json={
            "customer_id": self.customer_id, "plan": "basic", "domain": domain, "region": region or self.region_a,
            "billing_cycle": "monthly", "provision": "now"})
        assert response.status_code == 202, response.text
        assert response.headers["location"] == f"/v1/jobs/{response.json()['job']['id']}"
        return response.json()

    def service(self, service_id: str) -> dict:
        response = self.api.get(f"/v1/services/{service_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def logs(self, *names: str) -> str:
        return "\n".join(f"--- {n} ---\n{self.procs.log(n)[-4000:]}" for n in names)


@pytest.fixture(scope="module")
def stack(hostq_cmd, test_env, settings, tmp_path_factory, request):
    """Two fake WHMs in two fresh regions, the API, the scheduler and one worker per region; one tenant,
    customer and plan. `settings` has already migrated this run's database."""
    env = {**test_env, "HOSTQ_BROKER_HEARTBEAT_S": HEARTBEAT_S}
    if ON_RABBITMQ:
        env["HOSTQ_BROKER_URL"] = request.getfixturevalue("amqp_url")
    procs = GroupProcesses(hostq_cmd, env,
                           tmp_path_factory.mktemp("faults-logs"))
    region_a, region_b = _region("fa"), _region("fb")
    port_api, port_a, port_b = free_port(), free_port(), free_port()
    whm_a, whm_b, base = (f"http://127.0.0.1:{p}" for p in (port_a, port_b, port_api))
    try:
        procs.start("whm_a", "sandbox", "whm", "--port", str(port_a))
        procs.start("whm_b", "sandbox", "whm", "--port", str(port_b))
        procs.start("api", "api", "--port", str(port_api))
        procs.start("scheduler", "scheduler")
        procs.start("worker_a", "worker", "--region", region_a)
        procs.start("worker_b", "worker", "--region", region_b)
        with ThreadPoolExecutor(3) as pool:  # one-shot commands side by side: each is a Python start-up
            server_a = pool.submit(procs.run, "servers", "add", "--region", region_a, "--url", whm_a,
                                   "--username", "root", "--token", "sandbox", "--name", "whm-a")
            server_b = pool.submit(procs.run, "servers", "add", "--region", region_b, "--url", whm_b,
                                   "--username", "root", "--token", "sandbox", "--name", "whm-b")
            creds = pool.submit(procs.run, "tenants", "create", "--name", "Faults Hosting",  # a slug per stack:
                                "--slug", f"faults-{uuid.uuid4().hex[:8]}", "--rate-limit", "100000")  # test_chaos
            server_a, server_b, creds = server_a.result(), server_b.result(), creds.result()
        for url in (f"{whm_a}/__sandbox/accounts", f"{whm_b}/__sandbox/accounts", f"{base}/health/ready"):
            wait_until(url)
        with httpx.Client(base_url=base, auth=HostqSigner(creds["api_key"], creds["signing_secret"]),
                          timeout=15, limits=httpx.Limits(max_connections=40)) as api, \
                httpx.Client(base_url=whm_a, timeout=5) as fake_a, httpx.Client(base_url=whm_b, timeout=5) as fake_b:
            customer = api.post("/v1/customers", json={"name": "Caio", "email": "caio@example.com"})
            assert customer.status_code == 201, customer.text
            plan = api.post("/v1/plans", json={"code": "basic", "name": "Basic", "whm_package": "basic",
                                               "prices": {"monthly": 6990}})
            assert plan.status_code == 201, plan.text
            yield Stack(procs, api, fake_a, fake_b, region_a, region_b, server_a["server_id"],
                        server_b["server_id"], customer.json()["id"], hostq_cmd)
    finally:
        procs.stop_all()


def _clear(fake: httpx.Client) -> None:
    assert fake.delete("/__sandbox/faults").status_code == 200
    assert fake.post("/__sandbox/latency", json={"function": "createacct", "seconds": 0}).status_code == 200


@pytest.fixture(autouse=True)
def clean_fakes(stack):
    """No fault or latency leaks from one test into the next."""
    for fake in (stack.fake_a, stack.fake_b):
        _clear(fake)
    yield
    for fake in (stack.fake_a, stack.fake_b):
        _clear(fake)


def _fault(fake: httpx.Client, mode: str, times: int, **extra) -> None:
    response = fake.post("/__sandbox/faults", json={"function": "createacct", "mode": mode, "times": times, **extra})
    assert response.status_code == 200, response.text


# 1 -------------------------------------------------------------------------------------------------------------

def test_createacct_timeout_that_still_creates_is_adopted(stack):
    _fault(stack.fake_a, "timeout_then_create", 1)
    domain = _domain("adopt")
    order = stack.order(domain)

    job = poll_job(stack.api, order["job"]["id"], timeout=15)

    assert job["status"] == "succeeded", (job, stack.logs("worker_a"))
    assert job["attempts"] == 2 and job["result"]["outcome"] == "adopted", job
    found = accounts(stack.fake_a, domain)
    service = stack.service(order["service"]["id"])
    assert [(a["user"], a["domain"]) for a in found] == [(service["username"], domain)]
    assert service["status"] == "active" and service["server_id"] == stack.server_a


@pytest.fixture
def slow_region(stack):
    """A region of its own whose worker waits 1 s for createacct, with a 6 s settle time."""
    region, port = _region("fs"), free_port()
    whm = f"http://127.0.0.1:{port}"
    procs = GroupProcesses(stack.procs.hostq, {**stack.procs.env, "HOSTQ_WHM_CREATE_TIMEOUT": "1",
                                               "HOSTQ_WHM_CREATE_SETTLE_S": "6"}, stack.procs.logs)
    try:
        procs.start("whm_s", "sandbox", "whm", "--port", str(port))
        procs.start("worker_s", "worker", "--region", region)
        procs.run("servers", "add", "--region", region, "--url", whm, "--username", "root", "--token", "sandbox")
        wait_until(f"{whm}/__sandbox/accounts")
        with httpx.Client(base_url=whm, timeout=5) as fake:
            yield region, fake
    finally:
        procs.stop_all()


@pytest.mark.parametrize("latency_s, ends", [(3, "adopted"), (11, "whm_username_taken")])
def test_a_createacct_slower_than_the_client_waits_is_settled_by_the_last_attempt(stack, slow_region, latency_s,
                                                                                   ends):
    """createacct outlasts the client's 1 s; WHM holds the name from the start and makes the account at the end.
    The next attempt finds the name in use and no account: in doubt until 6 s after the send. The last of the 3
    attempts waits for that and decides: the account adopted if it came, else the name taken (an operator must
    look), never a job failed on the same doubt."""
    region, fake = slow_region
    assert fake.post("/__sandbox/latency", json={"function": "createacct", "seconds": latency_s}).status_code == 200
    domain = _domain("slow")
    order = stack.order(domain, region)

    job = poll_job(stack.api, order["job"]["id"], timeout=20)

    history = stack.procs.run("jobs", "show", job["id"])["history"]
    said = [(a["outcome"], (a["error"] or {}).get("code")) for a in history]
    assert said[:2] == [("retrying", "whm_timeout"), ("retrying", "whm_create_in_doubt")], (history, job)
    assert len(said) == 3, said
    if ends == "adopted":
        assert job["status"] == "succeeded" and job["result"]["outcome"] == "adopted", job
    else:  # WHM was still making it when the settle time ran out: the job names the name in use
        assert job["status"] == "failed" and job["error"]["code"] == "whm_username_taken", job
        deadline = time.monotonic() + 10
        while not accounts(fake, domain) and time.monotonic() < deadline:  # the account lands at the end...
            time.sleep(0.1)
        assert stack.procs.run("jobs", "retry", job["id"])["retried"] == [job["id"]]
        job = poll_job(stack.api, job["id"])  # ...and an ops retry adopts it
        assert job["status"] == "succeeded" and job["result"]["outcome"] == "adopted", job
    service = stack.service(order["service"]["id"])
    assert [(a["user"], a["domain"]) for a in accounts(fake, domain)] == [(service["username"], domain)]


# 2 -------------------------------------------------------------------------------------------------------------

def test_one_http_500_is_retried_into_one_account(stack):
    _fault(stack.fake_a, "http_500", 1)
    domain = _domain("retry")
    order = stack.order(domain)

    job = poll_job(stack.api, order["job"]["id"])

    assert job["status"] == "succeeded", (job, stack.logs("worker_a"))
    assert job["attempts"] == 2 and job["result"]["outcome"] == "created", job
    service = stack.service(order["service"]["id"])
    assert [(a["user"], a["domain"]) for a in accounts(stack.fake_a, domain)] == [(service["username"], domain)]
    assert service["status"] == "active"
    # The worker's lines about the failed attempt name the order's request id (Dramatiq's own lines too).
    about = [line for line in stack.procs.log("worker_a").splitlines() if f"request_id={job['request_id']}" in line]
    assert any("Retrying message" in line for line in about), stack.logs("worker_a")
    # An expected WHM failure is one WARNING line, without Dramatiq's "unhandled exception" and its traceback.
    assert any("[WARNING]" in line and "attempt 1 of 3 failed: whm_unavailable" in line and "next attempt in" in line
               for line in about), stack.logs("worker_a")
    assert not any("unhandled exception" in line for line in about), stack.logs("worker_a")


def test_result_0_fails_at_once_with_whm_reason(stack):
    reason = 'Unable to find package "basic".'
    _fault(stack.fake_a, "result_0", 1, reason=reason)
    domain = _domain("reject")
    order = stack.order(domain)

    job = poll_job(stack.api, order["job"]["id"])

    assert job["status"] == "failed", (job, stack.logs("worker_a"))
    assert job["attempts"] == 1, job
    assert job["error"]["code"] == "whm_rejected" and reason in job["error"]["message"], job
    assert accounts(stack.fake_a, domain) == []
    assert stack.service(order["service"]["id"])["status"] == "failed"


# 3 -------------------------------------------------------------------------------------------------------------

def test_repeated_5xx_fails_readably_then_ops_retry_creates_once(stack):
    _fault(stack.fake_a, "http_500", 10)
    domain = _domain("outage")
    order = stack.order(domain)
    job_id = order["job"]["id"]

    job = poll_job(stack.api, job_id)

    assert job["status"] == "failed", (job, stack.logs("worker_a"))
    assert job["attempts"] == 3 and job["max_attempts"] == 3, job
    assert job["error"]["code"] == "whm_unavailable" and "500" in job["error"]["message"], job
    assert stack.service(order["service"]["id"])["status"] == "failed"
    assert accounts(stack.fake_a, domain) == []

    # An operator clears the outage and retries the same job from the terminal.
    _clear(stack.fake_a)
    printed = stack.procs.run("jobs", "retry", job_id)
    assert printed["retried"] == [job_id] and printed["skipped"] == [], printed

    job = poll_job(stack.api, job_id)

    assert job["status"] == "succeeded", (job, stack.logs("worker_a"))
    assert job["attempts"] == 1 and job["result"]["outcome"] == "created", job
    service = stack.service(order["service"]["id"])
    assert service["status"] == "active"
    assert [(a["user"], a["domain"]) for a in accounts(stack.fake_a, domain)] == [(service["username"], domain)]


def test_a_create_that_left_its_unix_user_behind_is_retried_under_the_next_name(stack):
    _fault(stack.fake_a, "result_0_leave_user", 1)
    domain = _domain("leftover")
    order = stack.order(domain)
    job_id = order["job"]["id"]

    job = poll_job(stack.api, job_id)

    assert job["status"] == "failed" and job["attempts"] == 1, (job, stack.logs("worker_a"))
    assert job["error"]["code"] == "whm_rejected" and "given back" in job["error"]["message"], job
    left = job["error"]["message"].split("username ")[1].split("'")[1]
    assert f"WHM now holds {left!r} with no account" in job["error"]["message"], job
    assert accounts(stack.fake_a, domain) == []

    printed = stack.procs.run("jobs", "retry", job_id)
    assert printed["retried"] == [job_id], printed
    job = poll_job(stack.api, job_id)

    assert job["status"] == "succeeded" and job["result"]["outcome"] == "created", (job, stack.logs("worker_a"))
    service = stack.service(order["service"]["id"])
    assert service["status"] == "active" and service["username"] != left
    assert [(a["user"], a["domain"]) for a in accounts(stack.fake_a, domain)] == [(service["username"], domain)]


def test_a_domain_another_account_holds_fails_without_naming_that_account_to_the_reseller(stack):
    """Another WHM account (another reseller's, maybe) has the domain: the job fails whm_domain_taken; which account
    is for ops alone, in the attempt history of `hostq jobs show` and the worker's log, never in the API."""
    domain, other = _domain("taken"), f"zo{uuid.uuid4().hex[:6]}"
    made = stack.fake_a.get("/json-api/createacct", params={
        "api.version": 1, "username": other, "domain": domain, "plan": "basic", "password": "Xx1-long-pass",
        "contactemail": "x@example.com"}, headers={"Authorization": "whm root:sandbox"})
    assert made.json()["metadata"]["result"] == 1, made.text
    job = poll_job(stack.api, stack.order(domain)["job"]["id"])

    assert job["status"] == "failed" and job["error"]["code"] == "whm_domain_taken", job
    assert other not in json.dumps(job), job
    [attempt] = stack.procs.run("jobs", "show", job["id"])["history"]
    assert other in attempt["error"]["message"], attempt
    assert other in stack.procs.log("worker_a")


# 4 -------------------------------------------------------------------------------------------------------------

def test_thirty_concurrent_orders_with_one_stem_get_thirty_accounts(stack):
    # Every domain's first label starts with "samestem": all 30 want the username "samestem".
    run = uuid.uuid4().hex[:6]
    domains = [f"samestem-{run}-{n}.example.com" for n in range(30)]
    started = time.monotonic()
    with ThreadPoolExecutor(30) as pool:
        orders = list(pool.map(stack.order, domains))

    jobs: dict[str, dict] = {}
    pending = {o["job"]["id"] for o in orders}
    deadline = started + 30
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            job = stack.api.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                jobs[job_id] = job
                pending.discard(job_id)
        time.sleep(0.1)
    elapsed = time.monotonic() - started

    assert not pending, f"{len(pending)} jobs unfinished after {elapsed:.1f} s\n{stack.logs('worker_a')}"
    failed = [j for j in jobs.values() if j["status"] != "succeeded"]
    assert not failed, [(j["error"], j["attempts"]) for j in failed]
    assert elapsed < 30
    found = [a for a in accounts(stack.fake_a) if a["domain"] in set(domains)]
    assert sorted(a["domain"] for a in found) == sorted(domains)  # one account per domain, none twice
    users = [a["user"] for a in found]
    assert len(set(users)) == 30 and len({u[:8] for u in users}) == 30, users
    assert all(u.startswith("samest") for u in users), users  # the collisions were resolved, not avoided
    services = {o["service"]["id"]: stack.service(o["service"]["id"]) for o in orders}
    assert {s["status"] for s in services.values()} == {"active"}
    assert sorted((s["username"], s["domain"]) for s in services.values()) == \
        sorted((a["user"], a["domain"]) for a in found)


# 5 -------------------------------------------------------------------------------------------------------------

@dataclass
class CrashRegion:
    """A region of its own (fake WHM + one worker) whose worker the test may SIGKILL and restart."""

    procs: GroupProcesses
    fake: httpx.Client
    region: str
    server_id: str

    def kill_worker(self) -> float:
        """SIGKILL the worker's whole process group; assert none of it survives; return the kill time."""
        group = self.procs.group("worker")
        assert len(group) >= 2, f"expected the dramatiq parent and its forked worker, got {group}"
        self.procs.stop("worker", kill=True)
        killed_at = time.monotonic()
        leftovers = subprocess.run(["ps", "-o", "pid=", "-p", ",".join(map(str, group))],
                                   capture_output=True, text=True).stdout.split()
        assert leftovers == [], f"worker processes survived the SIGKILL: {leftovers}"
        return killed_at

    def start_worker(self) -> None:
        self.procs.start("worker", "worker", "--region", self.region)

    def wait_createacct_calls(self, n: int, timeout: float = 5.0) -> None:
        """Until the fake WHM has received `n` createacct calls (the n-th is on the wire)."""
        deadline = time.monotonic() + timeout
        while calls(self.fake, "createacct") < n:
            assert time.monotonic() < deadline, f"createacct call {n} never reached the fake WHM"
            time.sleep(0.02)


@pytest.fixture
def crash_region(stack):
    region, port = _region("fc"), free_port()
    whm = f"http://127.0.0.1:{port}"
    procs = GroupProcesses(stack.procs.hostq, {
        **stack.procs.env,
        # createacct is slower than the kill but within the client's patience. The service lock keeps
        # its default TTL (create timeout + 60 s): the dead holder's lock is taken over once its
        # heartbeat is stale, not when the TTL runs out.
        "HOSTQ_WHM_CREATE_TIMEOUT": "10",
    }, stack.procs.logs)
    try:
        procs.start("whm_c", "sandbox", "whm", "--port", str(port))
        procs.start("worker", "worker", "--region", region)
        server = procs.run("servers", "add", "--region", region, "--url", whm, "--username", "root",
                           "--token", "sandbox")
        wait_until(f"{whm}/__sandbox/accounts")
        with httpx.Client(base_url=whm, timeout=5) as fake:
            yield CrashRegion(procs, fake, region, server["server_id"])
    finally:
        if "worker" in procs.running:  # disposable: no need to wait for a hanging attempt to end
            procs.stop("worker", kill=True)
        procs.stop_all()


def _attempt_running(stack: Stack, job_id: str, attempt: int, timeout: float = 40.0) -> dict:
    """Until the job's `attempt`-th attempt is running (or the job is finished)."""
    deadline = time.monotonic() + timeout
    while True:
        job = stack.api.get(f"/v1/jobs/{job_id}").json()
        if job["attempts"] >= attempt and job["status"] == "running" or job["status"] in FINISHED:
            return job
        assert time.monotonic() < deadline, f"attempt {attempt} of job {job_id} never started: {job}"
        time.sleep(0.05)


def _kill_mid_createacct(stack: Stack, crash: CrashRegion, stem: str, latency_s: float) -> tuple[str, dict, float]:
    """Order on the crash region, then SIGKILL its worker while the first createacct is in flight (WHM slowed
    by `latency_s`); the domain, the order's 202 body and when the worker was killed."""
    slowed = crash.fake.post("/__sandbox/latency", json={"function": "createacct", "seconds": latency_s})
    assert slowed.status_code == 200, slowed.text
    domain = _domain(stem)
    order = stack.order(domain, crash.region)
    job = _attempt_running(stack, order["job"]["id"], 1, timeout=20)
    assert job["status"] == "running" and job["attempts"] == 1, job
    crash.wait_createacct_calls(1)
    return domain, order, crash.kill_worker()


def test_worker_killed_mid_createacct_redelivers_and_creates_once(stack, crash_region, capsys):
    """SIGKILL of the whole worker (dramatiq parent and its forked consumer) while createacct is in flight."""
    crash = crash_region
    domain, order, killed_at = _kill_mid_createacct(stack, crash, "crash", 1.5)
    job_id = order["job"]["id"]
    assert stack.api.get(f"/v1/jobs/{job_id}").json()["status"] == "running"

    crash.start_worker()
    job = _attempt_running(stack, job_id, 2)
    redelivered_after = time.monotonic() - killed_at
    job = poll_job(stack.api, job_id, timeout=15)
    done_after = time.monotonic() - killed_at
    with capsys.disabled():
        print(f"\n[crash] SIGKILL -> attempt 2 started after {redelivered_after:.1f} s (worker restart "
              f"included), job {job['status']} after {done_after:.1f} s")

    assert job["status"] == "succeeded", (job, crash.procs.log("worker"))
    assert job["attempts"] == 2 and job["result"]["outcome"] == "adopted", job
    service = stack.service(order["service"]["id"])
    assert service["status"] == "active" and service["server_id"] == crash.server_id
    assert [(a["user"], a["domain"]) for a in accounts(crash.fake)] == [(service["username"], domain)]


def test_job_that_keeps_losing_its_worker_fails_after_max_attempts(stack, crash_region):
    crash = crash_region
    _fault(crash.fake, "timeout", 10, hold_s=60)  # every createacct hangs: each attempt dies mid-call
    domain = _domain("poison")
    order = stack.order(domain, crash.region)
    job_id = order["job"]["id"]

    for attempt in (1, 2, 3):  # HOSTQ_JOB_MAX_ATTEMPTS=3: each attempt loses its worker mid-createacct
        job = _attempt_running(stack, job_id, attempt)
        assert job["status"] == "running" and job["attempts"] == attempt, job
        crash.wait_createacct_calls(attempt)
        crash.kill_worker()
        crash.start_worker()

    # The third lost attempt was the last one: the job must end `failed`, not start a fourth.
    job = _attempt_running(stack, job_id, 4)
    assert job["attempts"] <= job["max_attempts"] == 3, job
    assert job["status"] == "failed" and job["error"]["code"], job
    assert accounts(crash.fake, domain) == []
    assert stack.service(order["service"]["id"])["status"] == "failed"


@needs_redis_broker
def test_a_job_whose_message_the_broker_lost_is_sent_again_and_provisioned(stack, crash_region, settings):
    """Redis restarted without its data (this machine's keeps nothing on disk): the jobs table is the truth."""
    crash = crash_region
    crash.procs.stop("worker")
    domain = _domain("lost")
    order = stack.order(domain, crash.region)
    job_id = order["job"]["id"]
    client = redis.Redis.from_url(settings.redis_url)
    key = f"{settings.namespace}:dramatiq:provisioning.{crash.region}"
    try:
        deadline = time.monotonic() + 10
        while client.llen(key) < 1:
            assert time.monotonic() < deadline, "the order's message never reached Redis"
            time.sleep(0.05)
        client.delete(key)  # the message is gone; the job row still says queued
    finally:
        client.close()
    # `hostq relay` acts without the leader lock (the stack's scheduler holds it), here with a short window.
    relay = GroupProcesses(stack.procs.hostq, {**stack.procs.env, "HOSTQ_RESEND_STALLED_S": "2"}, stack.procs.logs)
    try:
        relay.start("relay", "relay")
        crash.start_worker()
        job = poll_job(stack.api, job_id, timeout=30)
        # (The run's database holds other tests' jobs that nobody consumes: they are re-sent too.)
        assert "waiting more than 2 s for their delivery" in relay.log("relay"), relay.log("relay")
    finally:
        relay.stop_all()
    assert job["status"] == "succeeded" and job["attempts"] == 1, (job, crash.procs.log("worker"))
    service = stack.service(order["service"]["id"])
    assert [(a["user"], a["domain"]) for a in accounts(crash.fake, domain)] == [(service["username"], domain)]


def _sql(settings, statement: str, *args) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(plain_dsn(settings.database_url))
        try:
            await conn.execute(statement, *args)
        finally:
            await conn.close()
    asyncio.run(run())


@needs_redis_broker
def test_a_running_job_whose_worker_and_message_were_both_lost_is_sent_again(stack, crash_region, settings):
    """Two faults at once: the worker is killed mid-createacct and Redis loses the message it held."""
    crash = crash_region
    domain, order, _ = _kill_mid_createacct(stack, crash, "twice", 1.5)
    job_id = order["job"]["id"]
    client = redis.Redis.from_url(settings.redis_url)
    try:  # every copy of the region's messages: its queue, the dead worker's unacked set, the bodies
        lost = list(client.scan_iter(match=f"{settings.namespace}:dramatiq:*{crash.region}*"))
        assert lost, "the killed worker's message was not in Redis"
        client.delete(*lost)
    finally:
        client.close()
    crash.start_worker()
    # Nothing can deliver it now; the row says running, unchanged for longer than an attempt may take.
    _sql(settings, "UPDATE jobs SET updated_at = now() - interval '1 hour', dispatched_at = dispatched_at - interval "
         "'1 hour' WHERE id = $1", uuid.UUID(job_id))  # (sent, then started, an hour ago)
    relay = GroupProcesses(stack.procs.hostq, stack.procs.env, stack.procs.logs)
    try:
        relay.start("relay", "relay")
        job = poll_job(stack.api, job_id, timeout=30)
        assert "running for longer than an attempt can" in relay.log("relay"), relay.log("relay")
    finally:
        relay.stop_all()
    # The lost attempt counts (worker_lost); the next adopts the account the first one's createacct made.
    assert job["status"] == "succeeded" and job["attempts"] == 2, (job, crash.procs.log("worker"))
    assert job["result"]["outcome"] == "adopted", job
    service = stack.service(order["service"]["id"])
    assert [(a["user"], a["domain"]) for a in accounts(crash.fake, domain)] == [(service["username"], domain)]


# 6 -------------------------------------------------------------------------------------------------------------

def test_each_region_provisions_on_its_own_whm(stack):
    domain_a, domain_b = _domain("west"), _domain("east")
    order_a, order_b = stack.order(domain_a, stack.region_a), stack.order(domain_b, stack.region_b)

    job_a, job_b = poll_job(stack.api, order_a["job"]["id"]), poll_job(stack.api, order_b["job"]["id"])

    assert job_a["status"] == job_b["status"] == "succeeded", (job_a, job_b)
    service_a, service_b = stack.service(order_a["service"]["id"]), stack.service(order_b["service"]["id"])
    assert service_a["server_id"] == stack.server_a and service_b["server_id"] == stack.server_b
    assert [a["user"] for a in accounts(stack.fake_a, domain_a)] == [service_a["username"]]
    assert [a["user"] for a in accounts(stack.fake_b, domain_b)] == [service_b["username"]]
    assert accounts(stack.fake_a, domain_b) == [] and accounts(stack.fake_b, domain_a) == []


# 7 -------------------------------------------------------------------------------------------------------------

def test_a_hung_region_does_not_hold_up_another(stack):
    _fault(stack.fake_a, "timeout", 5, hold_s=30)
    calls_before = calls(stack.fake_a, "createacct")
    domain_a = _domain("stuck")
    stuck = stack.order(domain_a, stack.region_a)
    poll_job(stack.api, stuck["job"]["id"], until=("running", "retrying", "succeeded", "failed"), timeout=15)
    deadline = time.monotonic() + 5
    while calls(stack.fake_a, "createacct") == calls_before:  # region A's createacct is now hanging
        assert time.monotonic() < deadline, "region A's createacct never started hanging"
        time.sleep(0.02)

    started = time.monotonic()
    domains_b = [_domain("free") for _ in range(5)]
    with ThreadPoolExecutor(5) as pool:
        orders_b = list(pool.map(lambda d: stack.order(d, stack.region_b), domains_b))
    jobs_b = [poll_job(stack.api, o["job"]["id"], timeout=10) for o in orders_b]
    elapsed = time.monotonic() - started
    stuck_now = stack.api.get(f"/v1/jobs/{stuck['job']['id']}").json()

    assert [j["status"] for j in jobs_b] == ["succeeded"] * 5, jobs_b
    assert elapsed < 4, f"region B took {elapsed:.1f} s while region A hung"
    assert stuck_now["status"] in ("running", "retrying"), stuck_now
    assert sorted(a["domain"] for a in accounts(stack.fake_b) if a["domain"] in domains_b) == sorted(domains_b)
    assert [a for a in accounts(stack.fake_a) if a["domain"] in domains_b] == []

    # Region A's job is not lost either: once its WHM answers again, it completes, with one account.
    _clear(stack.fake_a)
    final = poll_job(stack.api, stuck["job"]["id"], timeout=20)
    assert final["status"] == "succeeded" and final["attempts"] in (2, 3), final
    service = stack.service(stuck["service"]["id"])
    assert service["status"] == "active"
    assert [a["user"] for a in accounts(stack.fake_a, domain_a)] == [service["username"]]
