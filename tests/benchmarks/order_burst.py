"""A burst of exactly N signed orders, sent as fast as `concurrency` keep-alive connections allow.

Run in its own process by bench_provisioning.py as `order_burst.py '<json config>'`; prints one JSON line.
Reuses loadgen.py's request builder (a unique domain and a fresh signature per order) and response reader;
unlike loadgen it stops after a count, not a duration. Times are wall-clock (time.time()), so the caller
can compare them with the job rows' timestamps in Postgres.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import Config, Requests, read_response  # noqa: E402

SAMPLES = 5


class Burst:
    """Hands out the N orders to the connections and tallies the answers."""

    def __init__(self, config: Config, orders: int) -> None:
        self.requests, self.left = Requests(config), orders
        self.statuses: Counter = Counter()
        self.samples: list[str] = []
        self.first_accepted: float | None = None
        self.last_answer = 0.0

    def take(self) -> bool:
        """Claim one order to send; False when all are claimed."""
        if self.left <= 0:
            return False
        self.left -= 1
        return True

    def record(self, status: int, body: bytes) -> None:
        """Tally one answer (only 202 is a success)."""
        now = time.time()
        self.statuses[str(status)] += 1
        self.last_answer = now
        if status == 202 and self.first_accepted is None:
            self.first_accepted = now
        elif status != 202 and len(self.samples) < SAMPLES:
            self.samples.append(f"{status}: {body[:300].decode('utf-8', 'replace')}")


async def connection(port: int, burst: Burst) -> None:
    """One keep-alive connection sending orders back to back while any are left."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while burst.take():
            try:
                writer.write(burst.requests.next())
                status, body, closing = await read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                status, body, closing = 0, f"transport: {exc!r}".encode(), True
            burst.record(status, body)
            if closing:
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
    finally:
        writer.close()


async def run(config: Config, orders: int) -> dict:
    """Send the orders; the tally as a dict."""
    burst = Burst(config, orders)
    started = time.time()
    await asyncio.gather(*(connection(config.port, burst) for _ in range(config.concurrency)))
    seconds = burst.last_answer - started
    accepted = burst.statuses.get("202", 0)
    return {"orders": orders, "accepted": accepted, "errors": orders - accepted, "statuses": dict(burst.statuses),
            "error_samples": burst.samples, "concurrency": config.concurrency, "started": started,
            "first_accepted": burst.first_accepted, "last_answer": burst.last_answer,
            "seconds": round(seconds, 3), "rps": round(orders / seconds, 1) if seconds > 0 else None}


def main() -> None:
    """Read {"orders": N, **loadgen.Config} from argv[1], send, print the result as one JSON line."""
    spec = json.loads(sys.argv[1])
    orders = spec.pop("orders")
    config = Config(**{"seconds": 0.0, "warmup": 0.0, **spec})
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    print(json.dumps(runner(run(config, orders))), flush=True)


if __name__ == "__main__":
    main()
