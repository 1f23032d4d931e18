"""`hostq servers add|update|list`: the WHM servers of each region (operations.md, 'Commands')."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys

from domain.settings import Settings
from hostq.output import print_json

# hostq.admin (the database and models) is imported inside the handlers: `register` runs on every `hostq`
# invocation and must stay quick to import.


TOKEN_HELP = "the WHM API token; `-` reads it from the first line of stdin (kept out of the process list)"


def _token(value: str | None) -> str | None:
    """--token's value: `-` reads the first line of stdin, so the token shows in no process list or shell history."""
    if value != "-":
        return value
    # at a terminal, asked for without echo; else the first line of what is piped in
    token = (getpass.getpass("WHM token: ") if sys.stdin.isatty() else sys.stdin.readline()).strip()
    if not token:
        raise ValueError("--token -: no token on stdin (give it as the first line)")
    return token


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `servers` command tree to the `hostq` parser."""
    servers = sub.add_parser("servers", help="WHM servers").add_subparsers(dest="action", required=True)
    sadd = servers.add_parser("add", help="register a WHM server in a region")
    for flag in ("--region", "--url", "--username"):
        sadd.add_argument(flag, required=True)
    sadd.add_argument("--token", required=True, help=TOKEN_HELP)
    sadd.add_argument("--name")
    sadd.add_argument("--capacity", type=int, default=500)
    sadd.set_defaults(run=_servers_add)
    supdate = servers.add_parser("update", help="change a server's connection or capacity, or stop new orders "
                                 "reaching it (--disable)")
    supdate.add_argument("--server", required=True, help="server id (from `hostq servers list`)")
    for flag in ("--url", "--username", "--name"):
        supdate.add_argument(flag)
    supdate.add_argument("--token", help=TOKEN_HELP)
    supdate.add_argument("--capacity", type=int)
    toggle = supdate.add_mutually_exclusive_group()
    toggle.add_argument("--enable", dest="enabled", action="store_const", const=True, help="take new orders again")
    toggle.add_argument("--disable", dest="enabled", action="store_const", const=False,
                        help="take no new orders (its services stay and their actions still run)")
    supdate.set_defaults(run=_servers_update)
    slist = servers.add_parser("list", help="servers as JSON lines, with the services counting on them (`used`) "
                               "and capacity")
    slist.add_argument("--region")
    slist.set_defaults(run=_servers_list)


def _servers_add(args, settings: Settings) -> None:
    from hostq.admin import refuse_foreign_kek, register_server
    refuse_foreign_kek(settings)  # the token would be sealed with a KEK the workers cannot use
    print_json(asyncio.run(register_server(settings, region=args.region, url=args.url, username=args.username,
                                           token=_token(args.token), name=args.name, capacity=args.capacity)))


def _servers_update(args, settings: Settings) -> None:
    from hostq.admin import change_server
    changes = {name: getattr(args, name) for name in ("url", "username", "token", "name", "capacity", "enabled")
               if getattr(args, name) is not None}
    if not changes:
        raise ValueError("nothing to change: give --url, --username, --token, --name, --capacity, --enable or "
                         "--disable")
    if "token" in changes:
        changes["token"] = _token(changes["token"])
        from hostq.admin import refuse_foreign_kek
        refuse_foreign_kek(settings)
    print_json(asyncio.run(change_server(settings, args.server, **changes)))


def _servers_list(args, settings: Settings) -> None:
    from hostq.admin import list_servers
    for line in asyncio.run(list_servers(settings, region=args.region)):
        print_json(line)
