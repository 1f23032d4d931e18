"""Argument types of the command line: a bad value is argparse's one usage error, before anything starts."""

from __future__ import annotations

import argparse

from domain.provisioning.rules import REGION


def positive(value: str) -> int:
    """A whole number, 1 or more (a count of processes, threads, jobs)."""
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number, 1 or more, got {value!r}")
    return int(value)


def port(value: str) -> int:
    """A TCP port, 1 to 65535 (the kernel would take 99999 as 34463)."""
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 1 to 65535, got {value!r}")
    return int(value)


def region(value: str) -> str:
    """A region's name as `hostq servers add` takes it."""
    if not REGION.match(value):
        raise argparse.ArgumentTypeError(f"must be lower-case letters, digits and '-', got {value!r}")
    return value
