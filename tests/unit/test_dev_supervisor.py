"""`hostq dev`'s supervision of its children: restart what exits, give up on a crash loop."""

from __future__ import annotations

import signal

import pytest

from hostq import dev


class _Exited:
    """A child process that has exited with `code`."""

    def __init__(self, code: int) -> None:
        self.code = code

    def poll(self) -> int:
        return self.code


@pytest.fixture
def child(monkeypatch):
    """A supervised child whose process exits with the code `child.next_code` every time it is started."""
    monkeypatch.setattr(dev, "_signal_group", lambda proc, sig: None)
    monkeypatch.setattr(dev._Child, "_spawn", lambda self: _Exited(self.next_code))
    made = dev._Child.__new__(dev._Child)
    made.name, made.argv, made.exits = "the worker of region us", [], []
    made.next_code = 1
    made.proc = made._spawn()
    return made


def test_a_child_that_keeps_failing_on_its_own_stops_hostq_dev(child, capsys):
    outcomes = [child.restart_if_exited() for _ in range(dev.RESTART_LIMIT)]
    assert outcomes == [True] * (dev.RESTART_LIMIT - 1) + [False]
    assert f"exited {dev.RESTART_LIMIT} times within 60 s (last code 1); stopping everything" in capsys.readouterr().err


def test_a_child_killed_with_sigkill_is_always_started_again(child, capsys):
    """kill -9 from outside (a crash test, the OOM killer) is not a crash loop, however often it comes."""
    child.next_code = -signal.SIGKILL
    child.proc = child._spawn()
    assert all(child.restart_if_exited() for _ in range(3 * dev.RESTART_LIMIT))
    assert "stopping everything" not in capsys.readouterr().err
    child.next_code = 1  # it then fails on its own: those exits alone count
    child.proc = child._spawn()
    assert [child.restart_if_exited() for _ in range(dev.RESTART_LIMIT)][-2:] == [True, False]
