"""SIGTERM in a Dramatiq worker process: one stop per signal burst, and a real kill after that.

`kill -TERM -<group>` (what `hostq dev`, systemd's default KillMode and most supervisors do) reaches the worker
process twice at once: directly, and forwarded by Dramatiq's parent process. Dramatiq takes a second SIGTERM as
"kill now" and raises SystemExit in the main thread, which skips the worker's shutdown, and the AsyncIO
middleware's event-loop thread (not a daemon) then keeps the process alive for ever. Here the copies that
arrive within REPEAT_WINDOW_S of the first are the same stop; a SIGTERM after that kills the process at once
(its messages come back as after any crash: the broker redelivers them and the adopt rule does the rest).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import time

from dramatiq.cli import RET_KILLED

log = logging.getLogger("hostq.worker")
REPEAT_WINDOW_S = 2.0


#: prctl(2)'s option: the signal this process gets when its parent dies.
PR_SET_PDEATHSIG = 1


def _dramatiq_worker_process() -> bool:
    """Whether this is a Dramatiq worker process (its SIGTERM handler is Dramatiq's), not its parent or another."""
    return getattr(signal.getsignal(signal.SIGTERM), "__module__", None) == "dramatiq.cli"


def stop_with_parent() -> None:
    """Have this worker process sent SIGTERM when Dramatiq's parent process dies (`kill -9` of `hostq worker`).

    Orphaned, it would go on consuming, unseen by whatever supervises `hostq worker`, beside the worker that the
    supervisor starts again. SIGTERM stops it as any stop does: it finishes or gives back its messages. Linux only
    (prctl); elsewhere nothing changes."""
    if not _dramatiq_worker_process() or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("could not ask to be stopped with the worker's parent process: %s", os.strerror(ctypes.get_errno()))


def stop_once_per_burst() -> None:
    """Wrap Dramatiq's SIGTERM handler of this worker process (called where the worker imports its broker).

    Does nothing in any other process (the handler in place is not Dramatiq's worker-process one).
    """
    if not _dramatiq_worker_process():
        return
    dramatiq_handler = signal.getsignal(signal.SIGTERM)
    first_at: float | None = None

    def on_sigterm(signum, frame) -> None:
        nonlocal first_at
        now = time.monotonic()
        if first_at is None:
            first_at = now
            dramatiq_handler(signum, frame)  # stop: finish or requeue the current messages
        elif now - first_at >= REPEAT_WINDOW_S:
            log.warning("Killing worker process (a second SIGTERM)...")
            os._exit(RET_KILLED)

    signal.signal(signal.SIGTERM, on_sigterm)
