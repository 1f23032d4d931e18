"""The fake WHM's state file and its journal: every answered change survives a kill, and a change costs about the
same however many accounts the fake holds."""

from __future__ import annotations

import json

import pytest

from hostq.sandbox import statefile, whm_accounts
from hostq.sandbox.whm_accounts import AccountBook

PACKAGES = ("default", "basic", "pro")


def _create(book: AccountBook, user: str) -> None:
    answer = json.loads(book.run("createacct", {"username": user, "domain": f"{user}.example", "plan": "basic",
                                                "password": "s3cret-Pw"}, "root"))
    assert answer["metadata"]["result"] == 1, answer


def _state(book: AccountBook) -> dict:
    return {"accounts": {u: (a.domain, a.plan, a.suspended) for u, a in book.accounts.items()},
            "leftover": sorted(book.leftover_users)}


def test_every_answered_change_is_there_when_the_fake_starts_again_without_having_stopped(tmp_path):
    """The first book is never closed (as a fake killed with kill -9): what it answered is in its journal."""
    state = tmp_path / "whm.json"
    first = AccountBook(PACKAGES, state)
    for user in ("alice", "robertson", "carol"):
        _create(first, user)
    first.run("suspendacct", {"user": "alice", "reason": "abuse"}, "root")
    first.run("changepackage", {"user": "robertson", "pkg": "pro"}, "root")
    first.run("removeacct", {"username": "carol"}, "root")
    first.leave_user("dave")
    _create(first, "erin")
    first.leave_user("frank")
    first.remove_system_user("frank")

    again = AccountBook(PACKAGES, state)
    assert _state(again) == _state(first) == {
        "accounts": {"alice": ("alice.example", "basic", True), "robertson": ("robertson.example", "pro", False),
                     "erin": ("erin.example", "basic", False)},
        "leftover": ["dave"]}
    assert again.by_prefix["robertso"] == "robertson" and "carol" not in again.by_prefix
    assert (tmp_path / "whm.json.journal").read_text() == ""  # replayed into the file at start


def test_a_line_cut_short_by_a_kill_is_left_out_and_a_damaged_journal_stops_the_fake(tmp_path):
    state = tmp_path / "whm.json"
    book = AccountBook(PACKAGES, state)
    _create(book, "alice")
    journal = tmp_path / "whm.json.journal"
    with journal.open("a") as f:
        f.write('{"put": {"user": "bob", "dom')  # the kill came while this line was written: never answered
    assert set(AccountBook(PACKAGES, state).accounts) == {"alice"}

    for damaged in ("not json", '"a string"', "[1, 2]", '{"put": {"user": "x"}}', '{"what": 1}'):
        journal.write_text(f'{{"drop": "alice"}}\n{damaged}\n{{"leave": "x"}}\n')
        with pytest.raises(ValueError, match=r"journal .* is not one it wrote \(line 2"):
            AccountBook(PACKAGES, state)


def test_changes_the_file_already_holds_come_out_the_same_when_replayed(tmp_path):
    """A kill after the file was written whole but before the journal was emptied: the journal replays onto a
    file that already holds it."""
    state = tmp_path / "whm.json"
    book = AccountBook(PACKAGES, state)
    for user in ("alice", "bob", "carol"):
        _create(book, user)
    book.run("removeacct", {"username": "bob"}, "root")
    _create(book, "bob")  # the same name again, after its removal
    book.run("suspendacct", {"user": "carol", "reason": "x"}, "root")
    book.clear()
    _create(book, "dan")
    journal = tmp_path / "whm.json.journal"
    kept = journal.read_text()
    book._write_whole()  # the file now holds every change ...
    journal.write_text(kept)  # ... and the journal was not emptied
    assert _state(AccountBook(PACKAGES, state)) == _state(book) == {
        "accounts": {"dan": ("dan.example", "basic", False)}, "leftover": []}


def test_the_whole_file_is_written_rarely_not_after_every_change(tmp_path, monkeypatch):
    """Before, every change wrote every account: a fake with 3,000 accounts served 12 to 30 creates a second."""
    monkeypatch.setattr(whm_accounts, "JOURNAL_MIN", 10)
    written = []
    real_write = statefile.write
    monkeypatch.setattr(statefile, "write", lambda path, state: (written.append(len(state["accounts"])),
                                                                 real_write(path, state)))
    state = tmp_path / "whm.json"
    book = AccountBook(PACKAGES, state)
    for n in range(300):
        _create(book, f"user{n:04d}")
    # Written whole at start, then each time the journal holds as many changes as there are accounts (at least 10).
    assert written == [0, 10, 20, 40, 80, 160]
    assert len((tmp_path / "whm.json.journal").read_text().splitlines()) == 300 - 160
    assert len(AccountBook(PACKAGES, state).accounts) == 300
