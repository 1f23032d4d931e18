"""`hostq scheduler` run twice: one leads, and its log lines say which, and when leadership moves."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

import redis

from domain.migrate import drop_database, upgrade
from tests.conftest import BASE_DB, REDIS_URL, RUN


def _wait_for_line(path, text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in path.read_text().splitlines():
            if text in line:
                return line
        time.sleep(0.1)
    raise AssertionError(f"no {text!r} within {timeout} s:\n{path.read_text()}")


def test_two_schedulers_say_which_leads_and_the_other_takes_over_when_it_stops(hostq_cmd, test_env, tmp_path):
    # A database and namespace of its own: a scheduler relays and re-sends every job of its database.
    env = {**os.environ, **test_env, "DATABASE_URL": f"{BASE_DB}/hostq_test_{RUN}_clock",
           "HOSTQ_NAMESPACE": f"{test_env['HOSTQ_NAMESPACE']}-clock"}
    upgrade(env["DATABASE_URL"])
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    started: list[subprocess.Popen] = []
    try:
        for log in logs:
            with open(log, "w") as out:
                started.append(subprocess.Popen([*hostq_cmd, "scheduler"], env=env, stdout=out,
                                                stderr=subprocess.STDOUT, start_new_session=True))
            if log is logs[0]:
                line = _wait_for_line(log, "leading: this scheduler runs the clock")
                assert f"[PID {started[0].pid}] [hostq.scheduler] [INFO]" in line  # when, who, how bad
        _wait_for_line(logs[1], "another scheduler leads: this one takes over if it stops")
        started[0].send_signal(signal.SIGTERM)  # a leader that stops lets go of the lock
        assert started[0].wait(timeout=30) == 0
        _wait_for_line(logs[1], "leading: this scheduler runs the clock", timeout=10)
    finally:
        for process in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
        asyncio.run(drop_database(env["DATABASE_URL"]))
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(match=f"{env['HOSTQ_NAMESPACE']}*", count=1000):
            client.delete(key)
        client.close()
