"""`hostq sandbox whm|psp|mail`: the fakes of the outside systems as standalone servers (operations.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from domain.settings import Settings
from hostq.argtypes import port as port_type

# Each fake's module (and its server) is imported inside its handler: `register` runs on every `hostq`
# invocation and must stay quick to import.


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `sandbox` command tree to the `hostq` parser."""
    sandbox = sub.add_parser("sandbox", help="fake outside systems").add_subparsers(dest="action", required=True)
    whm = _fake(sandbox, "whm", "a fake WHM server", 2087, "the accounts")
    whm.add_argument("--token", default="sandbox")
    whm.add_argument("--packages", default="default,basic,pro")
    whm.set_defaults(run=_sandbox_whm)
    psp = _fake(sandbox, "psp", "a fake PSP (Banco Central's API Pix)", 8089, "the charges")
    psp.add_argument("--webhook-url", default="http://127.0.0.1:8000/v1/webhooks/pix/sandbox",
                     help="where payment webhooks are POSTed, exactly (default: %(default)s)")
    psp.add_argument("--webhook-secret", help="their signing secret (default: HOSTQ_PSP_WEBHOOK_SECRET, else sandbox)")
    psp.add_argument("--merchant-name", default="HOSTQ SANDBOX", help="the BR Codes' merchant name (field 59)")
    psp.add_argument("--merchant-city", default="SAO PAULO", help="the BR Codes' merchant city (field 60)")
    psp.set_defaults(run=_sandbox_psp)
    mail = sandbox.add_parser("mail", help="a fake mail server: SMTP, and the messages it received over HTTP")
    mail.add_argument("--host", default="127.0.0.1")
    mail.add_argument("--smtp-port", type=port_type, default=1025)
    mail.add_argument("--port", type=port_type, default=8025, help="GET/DELETE /__sandbox/messages (default: 8025)")
    mail.set_defaults(run=_sandbox_mail)


def _fake(sandbox: argparse._SubParsersAction, name: str, help_: str, port: int, kept: str) -> argparse.ArgumentParser:
    """A fake's command with the options they share: where it listens, and the file it may keep its state in."""
    parser = sandbox.add_parser(name, help=help_)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=port_type, default=port)
    parser.add_argument("--state", metavar="FILE", help=f"keep {kept} in this JSON file too (written after every "
                        "change, read at start), so a restarted fake still has them; without it they live in memory")
    return parser


def _sandbox_whm(args, settings: Settings) -> None:
    from hostq.sandbox.whm import serve
    packages = tuple(dict.fromkeys(p.strip() for p in args.packages.split(",")))
    if not all(packages):
        raise ValueError(f"--packages must be package names separated by commas, got {args.packages!r}")
    if not args.token.strip():
        raise ValueError("--token must not be empty (WHM would accept no call)")
    serve(host=args.host, port=args.port, token=args.token, packages=packages,
          state_path=Path(args.state) if args.state else None)


def _sandbox_psp(args, settings: Settings) -> None:
    from urllib.parse import urlsplit

    from hostq.sandbox.psp import serve
    if urlsplit(args.webhook_url).scheme not in ("http", "https") or not urlsplit(args.webhook_url).hostname:
        raise ValueError(f"--webhook-url must be an http:// or https:// URL, got {args.webhook_url!r}")
    serve(host=args.host, port=args.port, webhook_url=args.webhook_url,
          webhook_secret=args.webhook_secret or settings.psp_webhook_secret or "sandbox",
          merchant_name=args.merchant_name, merchant_city=args.merchant_city,
          state_path=Path(args.state) if args.state else None)


def _sandbox_mail(args, settings: Settings) -> None:
    from hostq.sandbox.mail import serve
    serve(host=args.host, smtp_port=args.smtp_port, port=args.port)
