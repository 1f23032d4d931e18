"""Shared helpers of the end-to-end tests: whole-process-group control, job polling, the fake WHM's accounts."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.e2e.conftest import Processes

FINISHED = ("succeeded", "failed", "cancelled")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a group we cannot signal is still there
        return True
    return True


class GroupProcesses(Processes):
    """Processes, each started in its own session (process group), so that a stop reaches its children too.

    `hostq worker` execs `python -m dramatiq`, which forks the worker processes that hold the broker
    connection: a SIGKILL of the parent alone would leave them consuming. `stop(kill=True)` SIGKILLs the
    whole group and waits until no member is left.
    """

    def start(self, name: str, *argv: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "a")
        self.running[name] = subprocess.Popen([*self.hostq, *argv], env=self.env, stdout=log, stderr=log,
                                              start_new_session=True)
        return self.running[name]

    def group(self, name: str) -> list[int]:
        """The pids of the process group of a running command (leader first)."""
        pgid = self.running[name].pid
        out = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout.split()
        return sorted((int(p) for p in out), key=lambda p: p != pgid)

    def stop(self, name: str, *, kill: bool = False) -> None:
        process = self.running.pop(name)
        pgid = process.pid  # a session leader's pid is its group id
        if kill:
            os.killpg(pgid, signal.SIGKILL)
        else:
            process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            process.wait()
        # Leftover children (a graceful parent normally takes them along): none may outlive the stop.
        deadline = time.monotonic() + 10
        while group_alive(pgid):
            if time.monotonic() > deadline:
                os.killpg(pgid, signal.SIGKILL)
                deadline = time.monotonic() + 10
            time.sleep(0.05)

    def stop_all(self) -> None:
        """Stop every process at once (each graceful stop can take a second or two)."""
        def stop(name: str) -> None:
            try:
                self.stop(name)
            except ProcessLookupError:
                pass
        with ThreadPoolExecutor(max(1, len(self.running))) as pool:
            list(pool.map(stop, list(self.running)))


def poll_job(api: httpx.Client, job_id: str, *, until=FINISHED, timeout: float = 20.0,
             interval: float = 0.05) -> dict:
    """GET /v1/jobs/{id} until its status is in `until`; AssertionError (with the last state) after `timeout`."""
    deadline = time.monotonic() + timeout
    job: dict = {}
    while time.monotonic() < deadline:
        response = api.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job = response.json()
        if job["status"] in until:
            return job
        time.sleep(interval)
    raise AssertionError(f"job {job_id} not in {until} after {timeout} s: {job}")


def accounts(fake: httpx.Client, domain: str | None = None) -> list[dict]:
    """The fake WHM's accounts, optionally only those of one domain."""
    found = fake.get("/__sandbox/accounts").json()["accounts"]
    return [a for a in found if domain is None or a["domain"] == domain]


def calls(fake: httpx.Client, function: str) -> int:
    """How many times the fake WHM was called for `function`."""
    return fake.get("/__sandbox/calls").json()["calls"].get(function, 0)
