"""`hostq api --workers N`: uvicorn's supervisor of N server processes, which stops listening as it stops them.

uvicorn's own keeps its copy of the listening socket open until every server process has finished the requests
it was serving (up to the 30 s grace): its servers have closed theirs, so the kernel queues each new connection
on the parent's, and nobody ever answers it. A load balancer then sees timeouts where `--workers 1` refuses the
connection at once (operations.md: on SIGTERM "the API stops accepting").
"""

from __future__ import annotations

from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess


class _StopListeningFirst(Multiprocess):
    """On SIGTERM or SIGINT, close the parent's listening socket, then stop the server processes as uvicorn does."""

    def terminate_all(self) -> None:
        for sock in self.sockets:
            sock.close()
        super().terminate_all()


def serve_in_processes(app: str, **options: Any) -> None:
    """What `uvicorn.run(app, workers=N, ...)` does for N > 1, with _StopListeningFirst as the supervisor."""
    config = uvicorn.Config(app, **options)
    _StopListeningFirst(config, sockets=[config.bind_socket()]).run()
