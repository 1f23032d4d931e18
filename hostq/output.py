"""What every `hostq` command that creates or shows something prints: one JSON object per line on stdout."""

from __future__ import annotations

import json


def print_json(obj: dict) -> None:
    """One JSON object on a line of its own (operations.md: scripts read stdout, messages go to stderr)."""
    print(json.dumps(obj), flush=True)
