"""The fake mail server of operations.md, like Mailpit: an SMTP server (aiosmtpd) that keeps what it receives,
and `GET` / `DELETE /__sandbox/messages` over HTTP, both on one event loop.

Any AUTH credentials are accepted, without TLS: it is a sandbox on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import email
from email.message import EmailMessage
from email.policy import default as default_policy
from functools import partial
from typing import Any, Callable

import msgspec
import uvicorn
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from hostq.sandbox.asgi import TEXT, SandboxApp, respond
from hostq.stopping import exit_zero_on_stop_signals

#: At most this many messages are kept (the oldest go first): a long demo must not grow without end.
KEEP = 1000


def _part(message: EmailMessage, kind: str) -> str:
    body = message.get_body(preferencelist=(kind,))
    return body.get_content().replace("\r\n", "\n") if body is not None else ""


class Mailbox(SandboxApp):
    """The messages received, newest last, as SMTP handler and HTTP control API."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 - aiosmtpd
        """Keep one message (aiosmtpd's handler hook)."""
        message = email.message_from_bytes(envelope.original_content or envelope.content, policy=default_policy)
        headers: dict[str, str] = {}
        for name, value in message.items():
            headers.setdefault(name, str(value))
        self.messages.append({
            "from": str(message.get("From", envelope.mail_from)), "to": list(envelope.rcpt_tos),
            "subject": str(message.get("Subject", "")), "text": _part(message, "plain"),
            "html": _part(message, "html"), "headers": headers, "envelope_from": envelope.mail_from,
        })
        del self.messages[:-KEEP]
        return "250 Message accepted for delivery"

    async def handle(self, scope: dict, receive: Callable, send: Callable, body: bytes) -> None:
        match scope["method"], scope["path"].rstrip("/"):
            case "GET", "/__sandbox/messages":
                await respond(send, 200, msgspec.json.encode({"messages": self.messages}))
            case "DELETE", "/__sandbox/messages":
                self.messages.clear()
                await respond(send, 200, b'{"messages":[]}')
            case _:
                await respond(send, 404, b"Not Found", TEXT)


def _accept_any(server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any) -> AuthResult:
    return AuthResult(success=True)


async def start_smtp(mailbox: Mailbox, host: str, port: int) -> asyncio.Server:
    """The SMTP side, listening on the running loop."""
    factory = partial(SMTP, mailbox, hostname="sandbox.hostq.test", authenticator=_accept_any,
                      auth_require_tls=False)
    return await asyncio.get_running_loop().create_server(factory, host=host, port=port)


async def _serve(host: str, smtp_port: int, port: int) -> None:
    mailbox = Mailbox()
    smtp = await start_smtp(mailbox, host, smtp_port)
    try:
        await uvicorn.Server(uvicorn.Config(mailbox, host=host, port=port, log_level="warning",
                                            access_log=False)).serve()
    finally:
        smtp.close()
        await smtp.wait_closed()


def serve(host: str = "127.0.0.1", smtp_port: int = 1025, port: int = 8025) -> None:
    """Run the fake mail server (SMTP and HTTP) until interrupted."""
    exit_zero_on_stop_signals()
    asyncio.run(_serve(host, smtp_port, port))
