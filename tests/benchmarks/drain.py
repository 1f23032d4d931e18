"""Watching a worker drain a queue: progress polling and the CPU each party used while it worked."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tests.benchmarks.loadgen import cpu_seconds

Pids = Callable[[], list[int]]


def descendants(root: int) -> list[int]:
    """`root` and every process below it (a Dramatiq master and the worker processes it forked)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    ppid = int(stat.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, []))
    return found


class CpuMeter:
    """CPU used by groups of processes between start() and percent(), in % of one core.

    Processes found only at the end (a database connection opened meanwhile) count from their birth;
    processes gone by the end are not counted.
    """

    def __init__(self, groups: dict[str, Pids]) -> None:
        self.groups = groups
        self.before: dict[str, dict[int, float]] = {}
        self.wall = 0.0

    def start(self) -> None:
        """Snapshot every group now."""
        self.before = {name: {pid: cpu_seconds([pid]) for pid in find()} for name, find in self.groups.items()}
        self.wall = time.perf_counter()

    def percent(self) -> dict[str, float]:
        """Percent of one core used by each group since start()."""
        wall = time.perf_counter() - self.wall
        if wall < 0.05:  # drained between two polls: too short a window to say anything
            return {}
        used = {name: sum(cpu_seconds([pid]) - self.before[name].get(pid, 0.0) for pid in find())
                for name, find in self.groups.items()}
        return {name: round(max(0.0, 100 * seconds / wall), 1) for name, seconds in used.items()}


@dataclass(frozen=True)
class Progress:
    """What a probe sees: messages finished, messages started (or finished), and failures."""

    done: int
    begun: int
    failed: int = 0


async def wait_drained(probe: Callable[[], Awaitable[Progress]], total: int, meter: CpuMeter, *,
                       timeout: float, every: float) -> dict[str, float]:
    """Poll until `total` are done; meter CPU from the first start seen to the end. The CPU percentages."""
    deadline = time.monotonic() + timeout
    metering = False
    while time.monotonic() < deadline:
        progress = await probe()
        if not metering and progress.begun:
            meter.start()
            metering = True
        if progress.failed:
            raise RuntimeError(f"{progress.failed} job(s) failed or are retrying")
        if progress.done >= total:
            return meter.percent() if metering else {}
        await asyncio.sleep(every)
    raise RuntimeError(f"only {progress.done}/{total} done after {timeout:g} s")
