"""`hostq worker` stops on SIGTERM sent to its whole process group, as supervisors and `hostq dev` send it."""

from __future__ import annotations

import os
import socket
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.conftest import wait_until
from tests.e2e.helpers import GroupProcesses, group_alive


def _ready_worker(procs: GroupProcesses, region: str):
    """`hostq worker --region REGION` started in a process group of its own, once its worker process is ready."""
    worker = procs.start("worker", "worker", "--region", region)
    deadline = time.monotonic() + 30
    while "ready for action" not in procs.log("worker"):
        assert worker.poll() is None and time.monotonic() < deadline, procs.log("worker")
        time.sleep(0.1)
    return worker


def test_a_sigterm_to_the_workers_process_group_stops_it_promptly(hostq_cmd, test_env, settings, tmp_path):
    procs = GroupProcesses(hostq_cmd, test_env, tmp_path)
    worker = _ready_worker(procs, f"sg{uuid.uuid4().hex[:6]}")
    try:
        # The worker process gets the signal twice: from the group kill, and forwarded by Dramatiq's parent.
        os.killpg(worker.pid, signal.SIGTERM)
        started = time.monotonic()
        while (worker.poll() is None or group_alive(worker.pid)) and time.monotonic() - started < 20:
            time.sleep(0.1)  # poll() reaps the leader, which a killpg probe would still find as a zombie
        took = time.monotonic() - started
        assert not group_alive(worker.pid), f"still running {took:.0f} s after SIGTERM:\n{procs.log('worker')}"
        assert "Worker has been shut down" in procs.log("worker")  # a clean stop, not a kill
        assert took < 15, took
    finally:
        if group_alive(worker.pid):
            os.killpg(worker.pid, signal.SIGKILL)
        procs.running.pop("worker", None)


def test_the_api_and_a_fake_stop_with_exit_0_on_sigterm(procs, ports):
    """uvicorn raises the caught signal again after its graceful shutdown (exit 143); hostq's commands end 0."""
    procs.start("api", "api", "--port", str(ports["api"]))
    procs.start("whm", "sandbox", "whm", "--port", str(ports["whm"]))
    wait_until(f"http://127.0.0.1:{ports['api']}/health/live")
    wait_until(f"http://127.0.0.1:{ports['whm']}/__sandbox/accounts")
    for name in ("api", "whm"):
        process = procs.running.pop(name)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=40) == 0, procs.log(name)
        assert "Traceback" not in procs.log(name)


@pytest.mark.parametrize("function, control, setting", [
    ("listpkgs", "faults", {"mode": "timeout"}),
    ("listpkgs", "latency", {"seconds": 60}),
    ("createacct", "latency", {"seconds": 60}),
])
def test_a_fake_whm_stopping_drops_a_held_call_without_a_traceback(procs, ports, function, control, setting):
    """A call the fake holds (fault `timeout`, or a latency) when it is told to stop loses its connection, as
    with a stopped WHM: no 500 answered on its behalf, no traceback in the log."""
    base = f"http://127.0.0.1:{ports['whm']}"
    procs.start("whm", "sandbox", "whm", "--port", str(ports["whm"]))
    wait_until(f"{base}/__sandbox/accounts")
    assert httpx.post(f"{base}/__sandbox/{control}", json={"function": function, **setting}).status_code == 200
    query = "&username=stopme&domain=stop.example&plan=basic&password=Xx1-long-pass" if function == "createacct" else ""
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(httpx.get, f"{base}/json-api/{function}?api.version=1{query}", timeout=30,
                           headers={"Authorization": "whm root:sandbox"})
        time.sleep(0.5)  # the call is in, and held
        process = procs.running.pop("whm")
        process.send_signal(signal.SIGTERM)
        with pytest.raises(httpx.TransportError):
            held.result(timeout=30)
    assert process.wait(timeout=40) == 0, procs.log("whm")
    assert "Traceback" not in procs.log("whm"), procs.log("whm")


def test_a_worker_process_stops_when_hostq_worker_is_killed(hostq_cmd, test_env, settings, tmp_path):
    """`kill -9` of the `hostq worker` process (Dramatiq's parent): its worker process must not live on, orphaned,
    consuming beside the worker a supervisor starts again."""
    procs = GroupProcesses(hostq_cmd, test_env, tmp_path)
    worker = _ready_worker(procs, f"pd{uuid.uuid4().hex[:6]}")
    try:
        [child] = [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(int(p)) == worker.pid]
        worker.send_signal(signal.SIGKILL)  # the parent only, not its group
        worker.wait(timeout=10)
        started = time.monotonic()
        while _alive(child) and time.monotonic() - started < 20:
            time.sleep(0.1)
        assert not _alive(child), procs.log("worker")  # (its log lines went through the dead parent: none)
    finally:
        if group_alive(worker.pid):
            os.killpg(worker.pid, signal.SIGKILL)
        procs.running.pop("worker", None)


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_an_api_of_several_processes_refuses_new_connections_once_it_stops(procs, ports):
    """`hostq api --workers 2` (the Procfile's) on SIGTERM, while a request is still being sent: the request is
    finished, and a new connection is refused at once rather than queued where no process would answer it."""
    port = ports["api"]
    api = procs.start("api", "api", "--workers", "2", "--port", str(port))
    wait_until(f"http://127.0.0.1:{port}/health/live")
    slow = socket.create_connection(("127.0.0.1", port))
    slow.sendall(b"POST /v1/customers HTTP/1.1\r\nHost: hostq\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 2\r\n\r\n{")
    time.sleep(0.5)  # the request has reached a server process, which must now finish it
    api.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while True:  # until the supervisor has handled the signal (it looks every 0.5 s)
        try:
            probe = socket.create_connection(("127.0.0.1", port), timeout=2)
        except ConnectionRefusedError:
            break
        probe.close()
        assert time.monotonic() < deadline, "still accepting connections 10 s after SIGTERM"
        time.sleep(0.2)
    slow.sendall(b"}")
    slow.settimeout(10)
    assert slow.recv(64).startswith(b"HTTP/1.1 401"), "the request in flight was not answered"
    assert procs.running.pop("api").wait(timeout=40) == 0, procs.log("api")
