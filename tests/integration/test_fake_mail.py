"""The fake mail server of operations.md: what reaches its SMTP port is listed at /__sandbox/messages."""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage

import httpx
import pytest

from hostq.sandbox.mail import KEEP, Mailbox, start_smtp
from tests.conftest import free_port


@pytest.fixture
async def mail():
    mailbox, port = Mailbox(), free_port()
    smtp = await start_smtp(mailbox, "127.0.0.1", port)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mailbox), base_url="http://mail") as http:
        yield port, http, mailbox
    smtp.close()
    await smtp.wait_closed()


def _send(port: int, message: EmailMessage, login: tuple[str, str] | None = None) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        if login:
            client.login(*login)
        client.send_message(message)


async def test_a_message_sent_over_smtp_is_listed_with_text_html_and_headers(mail):
    port, http, _ = mail
    message = EmailMessage()
    message["From"] = "Demo Hosting <billing@demo.example>"
    message["To"] = "ana@example.com"
    message["Subject"] = "Fatura 123 — vence amanhã"
    message["X-Hostq-Dedupe"] = "invoice:123:reminder:-1"
    message.set_content("Olá Ana, sua fatura vence amanhã.")
    message.add_alternative("<p>Olá Ana, sua fatura <b>vence amanhã</b>.</p>", subtype="html")
    await asyncio.to_thread(_send, port, message, ("billing@demo.example", "any password"))

    [got] = (await http.get("/__sandbox/messages")).json()["messages"]
    assert got["from"] == "Demo Hosting <billing@demo.example>"
    assert got["to"] == ["ana@example.com"] and got["subject"] == "Fatura 123 — vence amanhã"
    assert got["text"].strip() == "Olá Ana, sua fatura vence amanhã."
    assert "<b>vence amanhã</b>" in got["html"]
    assert got["headers"]["X-Hostq-Dedupe"] == "invoice:123:reminder:-1"

    assert (await http.delete("/__sandbox/messages")).json() == {"messages": []}
    assert (await http.get("/__sandbox/messages")).json() == {"messages": []}


async def test_envelope_recipients_and_a_text_only_message(mail):
    port, http, _ = mail
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@x.example", "b@y.example", "plain"
    message.set_content("just text")

    def send():
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.send_message(message, to_addrs=["b@y.example", "audit@x.example"])

    await asyncio.to_thread(send)
    [got] = (await http.get("/__sandbox/messages")).json()["messages"]
    assert got["to"] == ["b@y.example", "audit@x.example"] and got["html"] == ""
    assert got["text"].strip() == "just text" and got["envelope_from"] == "a@x.example"


async def test_only_the_newest_messages_are_kept(mail):
    port, http, mailbox = mail
    mailbox.messages.extend({"subject": str(n)} for n in range(KEEP))
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@x.example", "b@y.example", "newest"
    message.set_content("x")
    await asyncio.to_thread(_send, port, message)
    kept = (await http.get("/__sandbox/messages")).json()["messages"]
    assert len(kept) == KEEP and kept[0]["subject"] == "1" and kept[-1]["subject"] == "newest"
    assert (await http.get("/__sandbox/nothing")).status_code == 404
