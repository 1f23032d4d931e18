"""The request id in every worker log line about a message (api-v1.md: "in every log line").

A job's message carries the request id of the API call that made it (`options["request_id"]`, see
workers/dispatch.py). `RequestIdLogContext` holds it while the worker thread processes the message, from the
first middleware hook to the last, so it also covers Dramatiq's own lines ("Failed to process message ...",
"Retrying message ..."); `RequestIdFilter`, on the worker process's log handlers, appends it to the line.
"""

from __future__ import annotations

import contextvars
import logging

import dramatiq

from domain.outages import describe, is_outage

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("hostq_request_id", default=None)


class RequestIdLogContext(dramatiq.Middleware):
    """Sets REQUEST_ID for the message being processed; must be the broker's first middleware.

    Dramatiq calls `before_*` hooks in order and `after_*` hooks in reverse, so the first middleware's
    context spans every other middleware's work on the message.
    """

    def before_process_message(self, broker, message) -> None:
        REQUEST_ID.set(message.options.get("request_id"))

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        REQUEST_ID.set(None)

    def after_skip_message(self, broker, message) -> None:
        REQUEST_ID.set(None)


class RequestIdFilter(logging.Filter):
    """Appends ` request_id=<id>` to a record logged while a message with a request id is processed."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = REQUEST_ID.get()
        if request_id and not getattr(record, "hostq_request_id", None):
            record.msg, record.args = f"{record.getMessage()} request_id={request_id}", None
            record.hostq_request_id = request_id  # once, however many handlers the record passes
        return True


class OutageWithoutTraceback(logging.Filter):
    """Dramatiq's own lines about an error that is an outage (Redis or Postgres out of reach: domain/outages.py)
    keep one line, the error named at its end, without the traceback. An outage meets every message, poll and
    acknowledgement: a traceback each (70 lines) buried everything else in the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and record.name.startswith("dramatiq") and (
                is_outage(exc) or isinstance(exc, dramatiq.errors.BrokerConnectionError)):  # (RabbitMQ's, wrapped)
            record.msg, record.args = f"{record.getMessage()}: {describe(exc)}", None
            record.exc_info, record.exc_text = None, None
        return True


def install_filter() -> None:
    """Put RequestIdFilter and OutageWithoutTraceback on the root logger's handlers (where every propagated record
    passes)."""
    for handler in logging.getLogger().handlers:
        for kind in (OutageWithoutTraceback, RequestIdFilter):
            if not any(isinstance(f, kind) for f in handler.filters):
                handler.addFilter(kind())
