"""A closed-loop HTTP/1.1 load generator: N keep-alive connections, one request in flight on each.

Run in its own process by bench_intake.py and bench_api.py as `loadgen.py '<json config>'`; prints one JSON
line. Raw asyncio streams (on uvloop when installed) keep the loader's cost per request far below httpx's,
and every signed request is signed anew (api-v1.md): an order carries a unique domain, a customer a unique
Idempotency-Key, and a signed GET cycles through `ids`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import os
import secrets
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

EXPECTED = {"order": 202, "get": 200, "customer": 201, "signed_get": 200}
SAMPLES = 5
TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Config:
    """What to load, for how long, and how hard."""

    name: str
    port: int
    path: str
    # "order": signed POST of a unique order; "get": plain GET; "customer": signed POST of a customer with a
    # unique Idempotency-Key; "signed_get": signed GET of `path` with "{id}" replaced by each of `ids` in turn
    kind: str
    seconds: float
    warmup: float
    concurrency: int
    tag: str = "x"
    api_key: str = ""
    signing_secret: str = ""
    customer_id: str = ""
    region: str = "us"
    server_pid: int = 0
    database: str = ""  # count only the Postgres backends serving this database
    expect: int = 0  # the status that is not an error; 0: EXPECTED[kind]
    ids: tuple[str, ...] = ()  # for "signed_get"


@dataclass
class Tally:
    """What the measurement window saw."""

    latencies: list[float] = field(default_factory=list)
    started_at: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    errors: int = 0
    samples: list[str] = field(default_factory=list)

    def add(self, expected: int, status: int, body: bytes, started: float, finished: float) -> None:
        """Record one measured request."""
        self.latencies.append(finished - started)
        self.started_at.append(started)
        self.statuses[str(status)] += 1
        if status != expected:
            self.errors += 1
            if len(self.samples) < SAMPLES:
                self.samples.append(f"{status}: {body[:300].decode('utf-8', 'replace')}")


class Requests:
    """Builds each request's bytes: each gets what makes it unique, and a fresh signature."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.counter = itertools.count()
        self.secret = config.signing_secret.encode()
        self.host = f"Host: 127.0.0.1:{config.port}\r\n"
        self.run = secrets.token_hex(4)  # Idempotency-Keys unique across loader runs too

    def next(self) -> bytes:
        """The next request, ready for the wire."""
        kind, tag = self.config.kind, self.config.tag
        if kind == "get":
            return f"GET {self.config.path} HTTP/1.1\r\n{self.host}\r\n".encode()
        if kind == "signed_get":
            ids = self.config.ids
            return self._signed("GET", self.config.path.replace("{id}", ids[next(self.counter) % len(ids)]), b"")
        if kind == "customer":
            n = next(self.counter)
            body = json.dumps({"name": f"Bench {tag} {n}", "email": f"c{tag}{n}@example.com"},
                              separators=(",", ":")).encode()
            return self._signed("POST", self.config.path, body, f"Idempotency-Key: {tag}-{self.run}-{n}\r\n")
        body = json.dumps({"customer_id": self.config.customer_id, "plan": "basic",
                           "domain": f"b{tag}{next(self.counter)}.example.com",
                           "region": self.config.region, "billing_cycle": "monthly",
                           "provision": "now"}, separators=(",", ":")).encode()
        return self._signed("POST", self.config.path, body)

    def _signed(self, method: str, target: str, body: bytes, extra_headers: str = "") -> bytes:
        timestamp = str(int(time.time()))
        payload = b".".join([timestamp.encode(), method.encode(), target.encode(), body])
        signature = hmac.new(self.secret, payload, hashlib.sha256).hexdigest()
        content = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n" if body else ""
        head = (f"{method} {target} HTTP/1.1\r\n{self.host}{content}"
                f"Authorization: Bearer {self.config.api_key}\r\n{extra_headers}"
                f"X-Timestamp: {timestamp}\r\nX-Signature: v1={signature}\r\n\r\n")
        return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body, and whether the server will close the connection."""
    head = (await reader.readuntil(b"\r\n\r\n")).lower()
    status = int(head[9:12])
    marker = head.find(b"\r\ncontent-length:")
    if marker < 0:
        raise ValueError(f"response without content-length: {head[:200]!r}")
    length = int(head[marker + 17:head.index(b"\r\n", marker + 2)])
    return status, await reader.readexactly(length), b"\r\nconnection: close" in head


@dataclass(frozen=True)
class Window:
    """Requests started in [measure_from, end) are measured; warm-up requests before it are not."""

    measure_from: float
    end: float


async def connection(config: Config, requests: Requests, tally: Tally, window: Window) -> None:
    """One keep-alive connection sending requests back to back until the window ends."""
    expected = config.expect or EXPECTED[config.kind]
    reader, writer = await asyncio.open_connection("127.0.0.1", config.port)
    try:
        while (started := time.perf_counter()) < window.end:
            try:
                writer.write(requests.next())
                status, body, closing = await read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                status, body, closing = 0, f"transport: {exc!r}".encode(), True
            if started >= window.measure_from:
                tally.add(expected, status, body, started, time.perf_counter())
            if closing:
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", config.port)
    finally:
        writer.close()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes (those that still exist)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def pids_named(name: str, argument: str = "") -> list[int]:
    """Every process called `name` whose command line contains `argument` (a backend's database)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as comm, open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    if comm.read().strip() == name and argument.encode() in cmdline.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


class CpuMeter:
    """CPU use of the loader, the server, Postgres and Redis over the measurement window."""

    def __init__(self, server_pid: int, database: str) -> None:
        backends = f" {database} " if database else ""
        self.groups = {"loader": lambda: [os.getpid()], "server": lambda: [server_pid] if server_pid else [],
                       "postgres": lambda: pids_named("postgres", backends),
                       "redis": lambda: pids_named("redis-server")}

    def start(self) -> None:
        """Snapshot every group now."""
        self.pids = {name: find() for name, find in self.groups.items()}
        self.before = {name: cpu_seconds(pids) for name, pids in self.pids.items()}
        self.wall = time.perf_counter()

    def percent(self) -> dict[str, float]:
        """Percent of one core used by each group since start() (postgres: backends alive at start)."""
        wall = time.perf_counter() - self.wall
        return {name: round(max(0.0, 100 * (cpu_seconds(pids) - self.before[name]) / wall), 1)
                for name, pids in self.pids.items()}


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return round(1000 * sorted_values[index], 2)


def summary(config: Config, tally: Tally, window: Window, cpu: dict[str, float]) -> dict:
    """The result line the benchmarks read."""
    latencies = sorted(tally.latencies)
    # By start time: in a closed loop every started request completes, so no second is cut short.
    per_second = Counter(int(start - window.measure_from) for start in tally.started_at)
    return {"name": config.name, "seconds": config.seconds, "concurrency": config.concurrency,
            "requests": len(latencies), "rps": round(len(latencies) / config.seconds, 1),
            "p50_ms": percentile(latencies, 0.50), "p99_ms": percentile(latencies, 0.99),
            "errors": tally.errors, "statuses": dict(tally.statuses), "error_samples": tally.samples,
            "per_second": [per_second.get(i, 0) for i in range(int(config.seconds))], "cpu_percent": cpu}


async def run(config: Config) -> dict:
    """Warm up, then measure, with `concurrency` connections."""
    requests, tally, meter = Requests(config), Tally(), CpuMeter(config.server_pid, config.database)
    now = time.perf_counter()
    window = Window(measure_from=now + config.warmup, end=now + config.warmup + config.seconds)
    loop = asyncio.get_running_loop()
    loop.call_at(loop.time() + config.warmup, meter.start)
    tasks = [asyncio.create_task(connection(config, requests, tally, window)) for _ in range(config.concurrency)]
    await asyncio.gather(*tasks)
    return summary(config, tally, window, meter.percent())


def main() -> None:
    """Read the config from argv[1], run, print the result as one JSON line."""
    fields = json.loads(sys.argv[1])
    config = Config(**{**fields, "ids": tuple(fields.get("ids", ()))})
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    print(json.dumps(runner(run(config))), flush=True)


if __name__ == "__main__":
    main()
