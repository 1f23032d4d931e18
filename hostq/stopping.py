"""A clean stop on SIGTERM or SIGINT for the processes uvicorn serves: exit 0, no traceback (operations.md).

uvicorn finishes its graceful shutdown and then raises the signal it caught again, so that the process ends
"killed by SIGTERM" (exit 143 from a shell). The handlers installed here are the ones uvicorn puts back before
it raises the signal again: they end the process with 0 instead, or with the status of a stop the process asked
for itself (`stop_with_status`: a start-up check that refused once Postgres answered).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Iterator

_status = 0


def _exit(signum: int, _frame) -> None:
    sys.exit(_status)


def exit_zero_on_stop_signals() -> None:
    """Make SIGTERM and SIGINT end this process with 0 (or stop_with_status's), once uvicorn has shut down."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit)


def stop_with_status(status: int) -> None:
    """Stop this process as SIGTERM does (uvicorn's graceful shutdown), ending it with `status`."""
    global _status
    _status = status
    os.kill(os.getpid(), signal.SIGTERM)


def stop_status() -> int:
    """The status stop_with_status asked for; 0 if it was not called."""
    return _status


@contextlib.contextmanager
def stop_signals_exit_zero() -> Iterator[None]:
    """Within the block (a wait before the process starts), SIGTERM and SIGINT end the process with 0."""
    before = {signum: signal.signal(signum, _exit) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


#: Set by `hostq dev` in the environment of each process it starts: its own pid.
SUPERVISOR_ENV = "HOSTQ_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def stop_with_supervisor() -> None:
    """In a process `hostq dev` started: get SIGTERM when `hostq dev` dies, even of SIGKILL (Linux's parent-death
    signal), so that no API, worker or fake outlives it, holding its port and taking jobs. The variable is dropped
    here, so that the processes this one starts (Dramatiq's, uvicorn's: it stops them itself) do not inherit it."""
    supervisor = os.environ.pop(SUPERVISOR_ENV, None)
    if supervisor is None or not sys.platform.startswith("linux"):
        return
    if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return
    if os.getppid() != int(supervisor):  # it died before the signal was asked for
        os.kill(os.getpid(), signal.SIGTERM)
