"""A clean stop on SIGTERM or SIGINT for the processes uvicorn serves: exit 0, no traceback (operations.md).

uvicorn finishes its graceful shutdown and then raises the signal it caught again, so that the process ends
"killed by SIGTERM" (exit 143 from a shell). The handlers installed here are the ones uvicorn puts back before
it raises the signal again: they end the process with 0 instead.
"""

from __future__ import annotations

import signal
import sys


def _exit_zero(signum: int, _frame) -> None:
    sys.exit(0)


def exit_zero_on_stop_signals() -> None:
    """Make SIGTERM and SIGINT end this process with 0, once uvicorn has shut down in good order."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_zero)
