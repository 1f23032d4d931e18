"""WHM naming rules and server placement: pure decisions."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_USERNAME = re.compile(r"^[a-z][a-z0-9]{0,15}$")
REGION = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
MAX_USERNAME = 16
UNIQUE_PREFIX = 8


def normalize_domain(domain: str) -> str:
    """Lower-case, without surrounding spaces or a trailing dot."""
    return domain.strip().lower().rstrip(".")


def valid_domain(domain: str) -> bool:
    """A registrable host name: at least two labels, an alphabetic TLD, <= 253 chars."""
    if not domain or len(domain) > 253 or not domain.isascii():
        return False
    labels = domain.split(".")
    return len(labels) >= 2 and all(_LABEL.fullmatch(label) for label in labels) and labels[-1].isalpha() \
        and len(labels[-1]) >= 2


#: Names cPanel & WHM keeps for the system (its "Reserved, Invalid, and Misconfigured Usernames" page: system
#: users and the default aliases of /etc/aliases). WHM's own list is longer and grows, and a server's aliases add
#: to it: its refusal at createacct stays the last word; these are refused at once, before anything is stored.
RESERVED_USERNAMES = frozenset({
    "abuse", "adm", "admin", "all", "amanda", "apache", "bin", "cpanel", "cphulkd", "cpses", "daemon", "dbus",
    "dovecot", "dovenull", "ftp", "games", "gopher", "halt", "ident", "mail", "mailman", "mailnull", "mysql",
    "named", "news", "nfsnobody", "nobody", "nscd", "ntp", "operator", "postfix", "postgres", "postmaster",
    "root", "rpc", "rpcuser", "rpm", "shutdown", "smmsp", "sshd", "sync", "system", "toor", "uucp", "virtfs",
    "webmaster", "wheel", "xfs"})


def username_problem(username: str) -> str | None:
    """Why WHM would refuse this username, or None when it is acceptable."""
    if not _USERNAME.fullmatch(username):
        return "must be 1-16 lower-case letters and digits, starting with a letter"
    if username.startswith("test"):
        return "must not start with 'test'"
    if username.endswith("assword"):
        return "must not end with 'assword'"
    if username in RESERVED_USERNAMES:
        return f"{username!r} is reserved for the system on WHM servers"
    return None


def username_base(domain: str) -> str:
    """The first 8 letters/digits of the domain's first label, made WHM-safe."""
    stem = re.sub(r"[^a-z0-9]", "", domain.split(".")[0].lower()).lstrip("0123456789")
    while stem.startswith("test"):  # 'testest' must not become 'test'
        stem = "t" + stem[4:]
    return (stem or "user")[:UNIQUE_PREFIX]


def username_candidates(domain: str) -> Iterable[str]:
    """Usernames to try in order: the domain's stem, then the stem with a counter in its first 8; each once.

    A stem that ends in digits can spell the same name twice (`a0001` + `100` and `a000` + `1100`): the repeat is
    skipped, or a job would ask WHM again about a name it was refused."""
    base = username_base(domain)
    seen = {base}
    yield base
    for n in range(1, 10_000):
        suffix = str(n)
        name = (base[: UNIQUE_PREFIX - len(suffix)] if len(base) + len(suffix) > UNIQUE_PREFIX else base) + suffix
        if name not in seen:
            seen.add(name)
            yield name


def username_family(domain: str) -> str:
    """What every one of the domain's username candidates begins with."""
    return username_base(domain)[:UNIQUE_PREFIX - 4]


def choose_username(domain: str, taken_prefixes: set[str]) -> str:
    """The first candidate whose first 8 characters no account on the server uses."""
    for candidate in username_candidates(domain):
        if candidate[:UNIQUE_PREFIX] not in taken_prefixes and username_problem(candidate) is None:
            return candidate
    raise ValueError("no free username")  # 10,000 collisions on one server: not a real case


@dataclass(frozen=True, slots=True)
class ServerLoad:
    """A server's capacity and how many live accounts it has."""

    server_id: object
    capacity: int
    used: int


def place(servers: Iterable[ServerLoad]) -> object | None:
    """The least-loaded server with room (ties: the first registered), or None when all are full."""
    with_room = [s for s in servers if s.used < s.capacity]
    if not with_room:
        return None
    return min(with_room, key=lambda s: s.used / s.capacity).server_id


#: The error code of a create whose order names an account WHM already has, made outside hostq
#: (domain/provisioning/accounts.py); `hostq jobs retry --adopt` takes such a job (domain/jobs/effects.py).
MADE_OUTSIDE = "whm_account_made_outside"
