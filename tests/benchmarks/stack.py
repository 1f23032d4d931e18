"""The benchmark's world: its own database, Redis namespace (and RabbitMQ vhost), and the processes it starts and stops."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import asyncpg
import httpx
import redis

ROOT = Path(__file__).resolve().parents[2]
PG_BASE = os.environ.get("BENCH_PG_BASE", "postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
#: RabbitMQ for `--broker rabbitmq` (user and host; the run adds a vhost of its own).
AMQP_BASE = os.environ.get("BENCH_AMQP_BASE", "amqp://guest:guest@127.0.0.1:5672")
T = TypeVar("T")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def hostq_command() -> list[str]:
    """The `hostq` script next to this interpreter (the venv's), else `python -m hostq`."""
    script = Path(sys.executable).parent / "hostq"
    return [str(script)] if script.exists() else [sys.executable, "-m", "hostq"]


class Stack:
    """One run's database, namespace and processes; close() removes all of them."""

    def __init__(self, logs: Path) -> None:
        run = secrets.token_hex(4)
        self.database = f"hostq_bench_{run}"
        self.namespace = f"bench-{run}"
        self.logs = logs
        self.processes: dict[str, subprocess.Popen] = {}
        self._log_files: dict[str, object] = {}
        self.env = {**os.environ, "DATABASE_URL": f"postgresql+asyncpg://{PG_BASE}/{self.database}",
                    "REDIS_URL": REDIS_URL, "HOSTQ_KEK": base64.b64encode(secrets.token_bytes(32)).decode(),
                    "HOSTQ_NAMESPACE": self.namespace, "PYTHONUNBUFFERED": "1"}

    broker_url: str = REDIS_URL
    _vhost: str | None = None
    _counter = None  # a RabbitmqBroker kept for counting queued messages

    def use_rabbitmq(self) -> None:
        """Run on RabbitMQ (a virtual host of this run's, made with rabbitmqctl, deleted by close())."""
        vhost = f"hostq_bench_{self.namespace.removeprefix('bench-')}"
        for argv in (["add_vhost", vhost], ["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"]):
            subprocess.run(["rabbitmqctl", *argv], check=True, capture_output=True, timeout=60)
        self._vhost = vhost
        self.broker_url = f"{AMQP_BASE}/{vhost}"
        self.env["HOSTQ_BROKER_URL"] = self.broker_url

    def queued(self, queue: str, namespace: str) -> int:
        """Messages waiting in a Dramatiq queue (Redis: under `namespace`; RabbitMQ: ready in its vhost)."""
        if self._vhost is None:
            client = redis.Redis.from_url(REDIS_URL)
            try:
                return client.llen(f"{namespace}:dramatiq:{queue}")
            finally:
                client.close()
        if self._counter is None:
            from dramatiq.brokers.rabbitmq import RabbitmqBroker
            self._counter = RabbitmqBroker(url=self.broker_url)
        return self._counter.get_queue_message_counts(queue)[0]

    @property
    def plain_database_url(self) -> str:
        """The database URL as asyncpg (not SQLAlchemy) spells it."""
        return f"postgresql://{PG_BASE}/{self.database}"

    def hostq(self, *argv: str) -> dict:
        """Run a one-shot `hostq` command; return the JSON object it prints (if any)."""
        done = subprocess.run([*hostq_command(), *argv], env=self.env, cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"hostq {' '.join(argv)} failed:\n{done.stderr}")
        return json.loads(done.stdout) if done.stdout.strip() else {}

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start a long-running process; its output goes to <logs>/<name>.log."""
        log = self._log_files[name] = open(self.logs / f"{name}.log", "w")
        process = subprocess.Popen(argv, env={**self.env, **(env or {})}, cwd=ROOT, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.processes[name] = process
        return process

    def wait_ready(self, name: str, url: str, timeout: float = 30.0) -> None:
        """Poll `url` until it answers 200; fail early if the process died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.processes[name].poll() is not None:
                raise RuntimeError(f"{name} exited; see {self.logs / (name + '.log')}")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{url} not ready after {timeout} s")

    def stop(self, name: str) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        process = self.processes.pop(name)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._log_files.pop(name).close()

    def close(self) -> None:
        """Stop every process, drop the database, delete the namespace's Redis keys; report what failed."""
        for name in list(self.processes):
            self.stop(name)
        for step in (self._drop_database, self._delete_keys, self._delete_vhost):
            try:
                step()
            except Exception as exc:  # keep cleaning; say what is left behind
                print(f"cleanup: {step.__name__} failed: {exc!r}", file=sys.stderr)

    def _drop_database(self) -> None:
        asyncio.run(_drop(self.database))

    def _delete_keys(self) -> None:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            for key in client.scan_iter(match=f"{self.namespace}*", count=1000):
                client.delete(key)
        finally:
            client.close()


    def _delete_vhost(self) -> None:
        if self._counter is not None:
            self._counter.close()
        if self._vhost is not None:
            subprocess.run(["rabbitmqctl", "delete_vhost", self._vhost], check=True, capture_output=True, timeout=60)


async def _drop(database: str) -> None:
    admin = await asyncpg.connect(f"postgresql://{PG_BASE}/postgres", timeout=5)
    try:
        name = database.replace('"', '""')
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C does


def run_in_stack(work: Callable[["Stack"], T], cleanup: Callable[["Stack"], None] | None = None
                 ) -> tuple["Stack", T]:
    """Run `work(stack)`; whatever happens, stop the processes and remove the database and Redis keys."""
    signal.signal(signal.SIGTERM, _terminate)
    stack = Stack(Path(tempfile.mkdtemp(prefix="hostq-bench-")))
    try:
        return stack, work(stack)
    except BaseException:
        print(f"failed; process logs kept in {stack.logs}", file=sys.stderr)
        raise
    finally:
        stack.close()
        if cleanup is not None:
            cleanup(stack)


def finish(stack: "Stack", results: dict, document: dict, json_path: Path | None) -> None:
    """Keep the logs only if a request failed; print the JSON document last (and write it to `json_path`)."""
    if any(result.get("errors") for result in results.values() if isinstance(result, dict)):
        print(f"  requests failed; server logs kept in {stack.logs}")
    else:
        shutil.rmtree(stack.logs, ignore_errors=True)
    text = json.dumps(document)
    if json_path:
        json_path.write_text(text + "\n")
    print(text)
