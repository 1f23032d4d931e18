"""A fake's state file: JSON written whole and renamed into place (a kill never leaves half a file), read at start."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")


def read(path: Path, fake: str, parse: Callable[[Any], T]) -> T:
    """`parse` of the file's JSON; a file the fake did not write is one clear ValueError."""
    try:
        return parse(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"the {fake}'s state file {path} is not one it wrote ({exc!r}): move it away "
                         "to start empty") from None


def write(path: Path, state: dict) -> None:
    """Write `state` to `path` whole, then rename it into place."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(state))
    os.replace(partial, path)


def check_writable(path: Path, fake: str) -> None:
    """Refuse to start (one clear ValueError) where the fake could not write its state file: each change would
    otherwise be applied in memory and answered with a 500."""
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text("")
        partial.unlink()
    except OSError as exc:
        raise ValueError(f"the {fake} cannot write its state file {path}: {exc.strerror or exc}") from None
