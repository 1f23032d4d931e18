"""The fake WHM's accounts: what WHM API 1's functions read and change, checked as WHM checks them."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from domain.provisioning.rules import RESERVED_USERNAMES
from hostq.sandbox import statefile

FUNCTIONS = frozenset({
    "createacct", "verify_new_username", "accountsummary", "suspendacct", "unsuspendacct",
    "removeacct", "changepackage", "passwd", "listaccts", "listpkgs",
})
#: Changes a book with a state file notes in its journal before it writes the whole file again: as many as the
#: accounts it holds, and at least this many (so each change costs about the same however many accounts there are).
JOURNAL_MIN = 1000
NO_ACCOUNT = "Account does not exist."
_USERNAME = re.compile(r"[a-z0-9]+")
#: Names every cPanel server already has as system users, or keeps for itself: never an account's. More than hostq
#: refuses at order time, as a real server's list is longer (and grows).
RESERVED = RESERVED_USERNAMES | {"cpanelsolr", "horde", "leechprotect", "modsec", "munin", "roundcube"}
_DOMAIN = re.compile(r"(?=.{4,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")


class Rejected(Exception):
    """A call WHM answers with metadata.result 0; the argument is the reason."""


@dataclass
class Account:
    user: str
    domain: str
    plan: str
    owner: str
    email: str
    created_at: datetime
    ip: str = "192.0.2.10"
    suspended: bool = False
    suspendreason: str = "not suspended"

    def summary(self) -> dict[str, Any]:
        """The account as accountsummary and listaccts show it."""
        return {
            "user": self.user, "domain": self.domain, "plan": self.plan, "owner": self.owner,
            "email": self.email, "ip": self.ip, "suspended": int(self.suspended),
            "suspendreason": self.suspendreason, "diskused": "0M", "disklimit": "unlimited",
            "startdate": self.created_at.strftime("%y %b %d %H:%M"),
            "unix_startdate": int(self.created_at.timestamp()), "partition": "home",
            "theme": "jupiter", "shell": "/bin/bash", "is_locked": 0,
        }

    def control(self) -> dict[str, Any]:
        """The account as GET /__sandbox/accounts shows it."""
        return {
            "user": self.user, "domain": self.domain, "plan": self.plan,
            "suspended": int(self.suspended),
            "created_at": self.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


class AccountBook:
    """One fake server's accounts and the system users failed creates left behind, with the API 1 functions on
    them; also kept in `state_path` when given, so that a restarted fake still has them, as a real WHM would.

    The state file is written whole now and then; each change in between is one line appended to its journal
    (`<state file>.journal`) before the change is answered, so a fake killed at any moment keeps every change it
    answered. Writing the whole file after every change cost as much as the file's size, so a fake with thousands
    of accounts spent more CPU on it than hostq on the jobs it served. At start the journal is replayed onto the
    file, which is then written whole and the journal emptied."""

    def __init__(self, packages: tuple[str, ...], state_path: Path | None = None) -> None:
        self.packages = tuple(packages)
        self.accounts: dict[str, Account] = {}
        self.by_domain: dict[str, str] = {}
        self.by_prefix: dict[str, str] = {}
        # System users a failed createacct left behind (fault `result_0_leave_user`): the name stays in use.
        self.leftover_users: set[str] = set()
        # Creates under way (a createacct with latency): user -> domain, both taken until the account exists.
        self.creating: dict[str, str] = {}
        self.state_path = state_path
        self._journal: Any = None  # the open journal, with a state file
        self._noted = 0  # changes in the journal since the file was last written whole
        self._room = JOURNAL_MIN  # how many it may hold before the file is written whole again
        if state_path is not None:
            statefile.check_writable(state_path, "fake WHM")
            if state_path.exists():
                self._load(state_path)
            self._replay(self._journal_path())
            self._write_whole()

    def _journal_path(self) -> Path:
        assert self.state_path is not None
        return self.state_path.with_name(self.state_path.name + ".journal")

    def _load(self, path: Path) -> None:
        def parse(state: dict) -> tuple[list[Account], set[str]]:
            return [_account(fields) for fields in state["accounts"]], set(state["leftover_users"])

        accounts, leftover = statefile.read(path, "fake WHM", parse)
        for account in accounts:
            self._keep(account)
        self.leftover_users.update(leftover)

    def _replay(self, path: Path) -> None:
        """Apply the journal's changes in order. Each sets a state outright, so changes the file already holds
        (written whole just before a kill, the journal not emptied yet) come out the same. A last line cut short
        (a kill while it was written) was never answered: it is left out."""
        try:
            lines = path.read_text().split("\n")
        except FileNotFoundError:
            return
        for number, line in enumerate(lines, 1):
            if not line:
                continue
            try:
                change = json.loads(line)
                if not isinstance(change, dict):
                    raise TypeError(f"not an object: {line}")
                if "put" in change:
                    if (old := self.accounts.get(change["put"]["user"])) is not None:
                        self._forget(old)
                    self._keep(_account(change["put"]))
                elif "drop" in change:
                    if (old := self.accounts.get(change["drop"])) is not None:
                        self._forget(old)
                elif "leave" in change:
                    self.leftover_users.add(change["leave"])
                elif "unleave" in change:
                    self.leftover_users.discard(change["unleave"])
                elif change.get("clear") is True:
                    self._clear()
                else:
                    raise KeyError(line)
            except (ValueError, KeyError, TypeError) as exc:
                if number == len(lines):  # the last line, without its newline: cut short
                    return
                raise ValueError(f"the fake WHM's journal {path} is not one it wrote (line {number}: {exc!r}): "
                                 "move it and the state file away to start empty") from None

    def _write_whole(self) -> None:
        """Write the state file whole (then renamed into place: a kill never leaves half a file), then start an
        empty journal."""
        accounts = [_fields(a) for a in self.accounts.values()]
        statefile.write(self.state_path, {"accounts": accounts, "leftover_users": sorted(self.leftover_users)})
        if self._journal is not None:
            self._journal.close()
        self._journal = open(self._journal_path(), "w", buffering=1)  # line-buffered: a write(2) per change
        self._noted, self._room = 0, max(JOURNAL_MIN, len(self.accounts))

    def _note(self, change: dict) -> None:
        """Keep one change in the journal, if there is a state file. The file is written whole again once the
        journal holds as many changes as the file held accounts (at least JOURNAL_MIN): the journal stays about as
        long as the file at most, and writing the file costs each change about the same however many accounts
        there are."""
        if self._journal is None:
            return
        self._journal.write(json.dumps(change) + "\n")
        self._noted += 1
        if self._noted >= self._room:
            self._write_whole()

    def _keep(self, account: Account) -> None:
        self.accounts[account.user], self.by_domain[account.domain] = account, account.user
        self.by_prefix[account.user[:8]] = account.user

    def _forget(self, account: Account) -> None:
        del self.accounts[account.user], self.by_domain[account.domain]
        if self.by_prefix.get(account.user[:8]) == account.user:
            del self.by_prefix[account.user[:8]]

    def _clear(self) -> None:
        for store in (self.accounts, self.by_domain, self.by_prefix, self.leftover_users):
            store.clear()

    def clear(self) -> None:
        """Forget every account and leftover system user."""
        self._clear()
        self._note({"clear": True})

    def leave_user(self, user: str) -> None:
        """A failed createacct left the Unix user `user` behind: the name stays taken."""
        self.leftover_users.add(user)
        self._note({"leave": user})

    def remove_system_user(self, user: str) -> bool:
        """What an operator does on a real server (userdel) for a user a failed create left; False if none."""
        if user not in self.leftover_users:
            return False
        self.leftover_users.discard(user)
        self._note({"unleave": user})
        return True

    def run(self, function: str, params: dict[str, str], caller: str) -> bytes:
        """Perform one function and encode its envelope."""
        handler = getattr(self, f"_{function}", None) if function in FUNCTIONS else None
        if handler is None:
            reason = f'Unknown app ("{function}") requested for this version (1) of the API.'
            return envelope(function, 0, reason, {})
        try:
            reason, data = handler(params, caller)
        except Rejected as exc:
            return envelope(function, 0, str(exc), {})
        return envelope(function, 1, reason, data)

    def check_username(self, user: str) -> None:
        """Raise Rejected unless `user` is a valid, free WHM username."""
        if not user:
            raise Rejected("You must specify a username.")
        if len(user) > 16:
            raise Rejected(f"The username “{user}” is too long: usernames cannot exceed 16 characters.")
        if not _USERNAME.fullmatch(user):
            raise Rejected("Usernames may only contain lowercase letters (a-z) and digits (0-9).")
        if user[0].isdigit():
            raise Rejected("Usernames cannot begin with a digit.")
        if user.startswith("test"):
            raise Rejected("Usernames cannot begin with “test”.")
        if user.endswith("assword"):
            raise Rejected("Usernames cannot end with “assword”.")
        if user in RESERVED:
            raise Rejected(f"The username “{user}” is reserved.")
        if user in self.accounts:
            raise Rejected(f'This system already has an account named "{user}".')
        if user in self.leftover_users or user in self.creating:
            raise Rejected(f"The username “{user}” is in use by an existing system user.")
        other = self.by_prefix.get(user[:8]) or next((u for u in self.creating if u[:8] == user[:8]), None)
        if other is not None:
            raise Rejected(f"The first eight characters of “{user}” must differ from those of the account “{other}”.")

    def could_create(self, user: str) -> bool:
        """Whether `user` is a valid name that no account or system user holds."""
        try:
            self.check_username(user)
        except Rejected:
            return False
        return True

    def _check_create(self, p: dict[str, str]) -> tuple[str, str, str]:
        """createacct's user, domain and plan, or Rejected as WHM refuses them."""
        user, domain, plan = p.get("username", ""), p.get("domain", "").lower(), p.get("plan", "")
        self.check_username(user)
        if not _DOMAIN.fullmatch(domain):
            raise Rejected(f"“{domain}” is not a valid domain.")
        holder = self.by_domain.get(domain) or next((u for u, d in self.creating.items() if d == domain), None)
        if holder is not None:
            raise Rejected(f'The domain "{domain}" already exists in the userdata for the user "{holder}".')
        if plan not in self.packages:
            raise Rejected(f"Unable to find package “{plan}”.")
        if not p.get("password"):
            raise Rejected("You must specify a password.")
        return user, domain, plan

    def begin_create(self, p: dict[str, str]) -> str:
        """A slow createacct starts, as WHM's does: checked now, and its system user made at once (the name and
        the domain are taken from here on, while the account does not exist yet); the user, for end_create."""
        user, domain, _ = self._check_create(p)
        self.creating[user] = domain
        return user

    def end_create(self, user: str) -> None:
        """The slow createacct's own hold on its name and domain ends (its account is then made, or not)."""
        self.creating.pop(user, None)

    def _createacct(self, p: dict[str, str], caller: str) -> tuple[str, dict]:
        user, domain, plan = self._check_create(p)
        owner = p.get("owner") or caller
        account = Account(user, domain, plan, owner, p.get("contactemail", ""), datetime.now(UTC))
        self._keep(account)
        self._note({"put": _fields(account)})
        names = {"nameserver": "ns1.sandbox.test", "nameserver2": "ns2.sandbox.test",
                 "nameserver3": None, "nameserver4": None}
        return "Account Creation Ok", {"ip": account.ip, **names, "package": plan}

    def _verify_new_username(self, p: dict[str, str], caller: str) -> tuple[str, dict]:
        self.check_username(p.get("user", ""))
        return "OK", {}

    def account(self, p: dict[str, str], key: str = "user", *, by_domain: bool = False) -> Account:
        """The account named by `key` (or, where the function takes one, by `domain`), or Rejected as WHM says it."""
        user = p.get(key) or (self.by_domain.get(p.get("domain", "").lower(), "") if by_domain else "")
        if not user and not (by_domain and p.get("domain")):
            raise Rejected(f"The “{key}” parameter is required.")
        if (account := self.accounts.get(user)) is None:
            raise Rejected(NO_ACCOUNT)
        return account

    def _accountsummary(self, p: dict[str, str], caller: str) -> tuple[str, dict]:
        return "OK", {"acct": [self.account(p, by_domain=True).summary()]}

    def _suspendacct(self, p: dict[str, str], caller: str) -> tuple[str, dict]:
        account = self.account(p)
        account.suspended, account.suspendreason = True, p.get("reason") or "Unknown"
        self._note({"put": _fields(account)})
        return f"Account “{account.user}” suspended.", {}

    def _unsuspendacct(self, p: dict[str, str], caller: str) -> tuple[str, dict]:
        account = self.account(p)
        account.suspended, account.suspendreason = False, "not suspended"
        self._note({"put": _fields(account)})
        return f"Account “{account.user}” unsuspended.", {}

    def _removeacct(self, p: dict[str, str], caller: str) -> tuple[str, dict]:
        # `user` is the deprecated name of `username`; WHM still accepts it.
        account = self.account(p, "user" if p.get("user") and not p.get("username") else "username")
        self._forget(account)
        self._note({"drop": account.user})
        return f"{account.user} account removed", {}

    def _changepackage(self, p: dict[str, str], caller: str) -> tuple[str, dict]:
        account = self.account(p)
        if (pkg := p.get("pkg", "")) not in self.packages:
            raise Rejected(f"Unable to find package “{pkg}”.")
        account.plan = pkg
        self._note({"put": _fields(account)})
        return f"Account Upgrade/Downgrade Complete for {account.user}", {}

    def _passwd(self, p: dict[str, str], caller: str) -> tuple[str, dict]:
        account = self.account(p)
        if not p.get("password"):
            raise Rejected("You must specify a password.")
        return f"Password changed for user {account.user}", {"app": []}

    def _listaccts(self, p: dict[str, str], caller: str) -> tuple[str, dict]:
        accounts = list(self.accounts.values())
        if search := p.get("search"):
            field = {"user": "user", "domain": "domain", "owner": "owner", "package": "plan", "ip": "ip"}.get(
                searchtype := p.get("searchtype", "user"))
            if field is None:
                raise Rejected(f"Invalid searchtype “{searchtype}”: use domain, owner, user, ip or package.")
            method = p.get("searchmethod", "regex")  # WHM's default: the value contains a match of the pattern
            if method not in ("exact", "regex"):
                raise Rejected(f"Invalid searchmethod “{method}”: use exact or regex.")
            try:
                pattern = re.compile(search if method == "regex" else re.escape(search))
            except re.error:
                raise Rejected(f"Invalid regular expression: {search}") from None
            match = pattern.search if method == "regex" else pattern.fullmatch
            accounts = [a for a in accounts if match(getattr(a, field))]
        return "Ok", {"acct": [a.summary() for a in accounts]}

    def _listpkgs(self, p: dict[str, str], caller: str) -> tuple[str, dict]:
        return "Ok", {"pkg": [{"name": name, "QUOTA": "unlimited", "BWLIMIT": "unlimited"} for name in self.packages]}


def _fields(account: Account) -> dict[str, Any]:
    """The account as the state file and the journal keep it."""
    return {**asdict(account), "created_at": account.created_at.isoformat()}


def _account(fields: dict[str, Any]) -> Account:
    return Account(**{**fields, "created_at": datetime.fromisoformat(fields["created_at"])})


def envelope(function: str, result: int, reason: str, data: dict) -> bytes:
    """An API 1 answer: `metadata` (result 1 or 0 and the reason) and `data`."""
    metadata = {"version": 1, "result": result, "reason": reason, "command": function, "output": {"raw": ""}}
    return msgspec.json.encode({"metadata": metadata, "data": data})
