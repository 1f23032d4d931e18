"""A process `hostq dev` started does not outlive it: killed with SIGKILL (no chance to stop its children), its
API, workers and fakes get SIGTERM from the kernel (hostq.stopping.stop_with_supervisor)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import httpx

from tests.conftest import free_port
from tests.e2e.helpers import group_alive

# A stand-in for `hostq dev`: it starts one supervised child as hostq dev does, prints its pid, and waits.
_SUPERVISOR = textwrap.dedent("""
    import sys, time
    from hostq import dev
    child = dev._Child("the fake WHM", ["sandbox", "whm", "--port", sys.argv[1]], fake=True)
    print(child.proc.pid, flush=True)
    time.sleep(600)
""")


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not within {timeout} s"
        time.sleep(0.1)


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie that whoever adopted the orphan has not reaped yet."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_a_child_of_hostq_dev_stops_when_hostq_dev_is_killed(test_env):
    port = free_port()
    supervisor = subprocess.Popen([sys.executable, "-c", _SUPERVISOR, str(port)], env={**os.environ, **test_env},
                                  stdout=subprocess.PIPE, text=True, start_new_session=True)
    child = None
    try:
        child = int(supervisor.stdout.readline())
        _wait_for(lambda: _answers(f"http://127.0.0.1:{port}/__sandbox/accounts"), 30, "the fake WHM answering")
        supervisor.kill()
        supervisor.wait(timeout=10)
        _wait_for(lambda: _gone(child), 10, "the orphaned fake WHM stopping")
        assert not _answers(f"http://127.0.0.1:{port}/__sandbox/accounts")
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
        if child is not None and group_alive(child):
            os.killpg(child, signal.SIGKILL)  # without the fix, the fake would live on


def _run_as_child(supervisor_pid: str | None, test_env) -> subprocess.CompletedProcess:
    code = "from hostq.stopping import stop_with_supervisor; stop_with_supervisor(); import time; time.sleep(30)"
    env = {**os.environ, **test_env}
    if supervisor_pid is not None:
        env["HOSTQ_SUPERVISOR_PID"] = supervisor_pid
    return subprocess.run([sys.executable, "-c", code], env=env, timeout=60)


def test_a_child_whose_hostq_dev_died_before_it_started_stops_at_once(test_env):
    """hostq dev died between starting the child and the child asking for the signal: its parent is no longer
    the pid it was given, so it stops itself."""
    started = time.monotonic()
    assert _run_as_child(str(os.getpid() + 10**6), test_env).returncode == -signal.SIGTERM
    assert time.monotonic() - started < 20


def test_a_child_of_a_live_hostq_dev_runs_on(test_env):
    code = ("import os; from hostq.stopping import stop_with_supervisor; stop_with_supervisor(); "
            "print(os.environ.get('HOSTQ_SUPERVISOR_PID'))")
    env = {**os.environ, **test_env, "HOSTQ_SUPERVISOR_PID": str(os.getpid())}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "None\n")  # ran on; what it starts does not inherit the variable
