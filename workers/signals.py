"""SIGTERM in a Dramatiq worker process: one stop per signal burst, and a real kill after that.

`kill -TERM -<group>` (what `hostq dev`, systemd's default KillMode and most supervisors do) reaches the worker
process twice at once: directly, and forwarded by Dramatiq's parent process. Dramatiq takes a second SIGTERM as
"kill now" and raises SystemExit in the main thread, which skips the worker's shutdown, and the AsyncIO
middleware's event-loop thread (not a daemon) then keeps the process alive for ever. Here the copies that
arrive within REPEAT_WINDOW_S of the first are the same stop; a SIGTERM after that kills the process at once
(its messages come back as after any crash: the broker redelivers them and the adopt rule does the rest).
"""

from __future__ import annotations

import logging
import os
import signal
import time

from dramatiq.cli import RET_KILLED

log = logging.getLogger("hostq.worker")
REPEAT_WINDOW_S = 2.0


def stop_once_per_burst() -> None:
    """Wrap Dramatiq's SIGTERM handler of this worker process (called where the worker imports its broker).

    Does nothing in any other process (the handler in place is not Dramatiq's worker-process one).
    """
    dramatiq_handler = signal.getsignal(signal.SIGTERM)
    if getattr(dramatiq_handler, "__module__", None) != "dramatiq.cli":
        return
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
