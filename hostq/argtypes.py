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


def regions(value: str) -> list[str]:
    """One or more region names, comma-separated, each once (`hostq dev --regions us,eu`)."""
    names = [name.strip() for name in value.split(",")]
    for name in names:
        if not REGION.match(name):
            raise argparse.ArgumentTypeError(f"each region must be lower-case letters, digits and '-', got {name!r}")
    if len(set(names)) < len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise argparse.ArgumentTypeError(f"region {twice!r} is given more than once")
    return names
