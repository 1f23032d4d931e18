"""Starting hostq's real processes as a user would, with `hostq` commands."""

from __future__ import annotations

import json
import os
import subprocess
import time

import httpx
import pytest

from tests.conftest import free_port


class Processes:
    """Started `hostq` processes; their output goes to files for post-mortems."""

    def __init__(self, hostq_cmd: list[str], env: dict[str, str], logs) -> None:
        self.hostq, self.env, self.logs = hostq_cmd, {**os.environ, **env}, logs
        self.running: dict[str, subprocess.Popen] = {}

    def run(self, *argv: str) -> dict:
        """Run a one-shot command; return the JSON object it prints."""
        done = subprocess.run([*self.hostq, *argv], env=self.env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout) if done.stdout.strip() else {}

    def start(self, name: str, *argv: str) -> subprocess.Popen:
        """Start a long-running command."""
        log = open(self.logs / f"{name}.log", "w")
        self.running[name] = subprocess.Popen([*self.hostq, *argv], env=self.env, stdout=log, stderr=log)
        return self.running[name]

    def stop(self, name: str, *, kill: bool = False) -> None:
        """SIGTERM (or SIGKILL) one process and wait for it."""
        process = self.running.pop(name)
        process.kill() if kill else process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()


def wait_until(url: str, timeout: float = 30.0) -> None:
    """Poll `url` until it answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready after {timeout} s")


@pytest.fixture
def procs(hostq_cmd, test_env, settings, tmp_path):
    """A process set on this run's database and Redis namespace; everything stopped afterwards."""
    group = Processes(hostq_cmd, test_env, tmp_path)
    yield group
    group.stop_all()


@pytest.fixture
def ports() -> dict[str, int]:
    return {"api": free_port(), "whm": free_port()}
