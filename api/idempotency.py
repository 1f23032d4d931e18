"""Idempotency-Key on POST (api-v1.md, 'Idempotency'): claim the key, run once, store the answer, replay it.

Sits on the v1 router after SignatureAuthMiddleware, so the tenant is known and the body is already read.
Litestar renders a handler's exceptions (problems.handle) inside the route's middleware stack, so the
problem+json of a 4xx/5xx reaches this middleware as ordinary response messages.

The response is buffered until complete and stored *before* the client sees any of it: a client that got an
answer and retries always gets the replay, and a client that goes away mid-send cannot make us release a key
whose effect is already committed.

Two protocols, by the handler's database access:

- `db` handlers (plain asyncpg, api.deps.db_for: the hot paths): the claim is the first row written by
  the request's own transaction, which this middleware opens and commits together with the stored answer
  (2xx, 4xx), then sends the jobs the handler recorded (api/dispatch_marks.py), or rolls back (5xx, an
  exception), sending nothing. The key is never seen half-done: another request with it
  waits up to 100 ms for that transaction, then gets the replay or 409 idempotency_in_flight; a crash rolls
  everything back, so a retry runs afresh. A failing handler's effect is rolled back to the savepoint taken
  right after the claim (EFFECT_SAVEPOINT), so the claim stays held while its 4xx is stored: a request with the
  same key sent meanwhile gets that answer, never a run of its own. (Only if that partial rollback cannot be done
  is everything rolled back, and the 4xx stored under a fresh claim, unless another request took the key.)
- `session` handlers (the ORM): the claim commits at once; its id travels in the request scope and
  api.deps.provide_session marks the claim `committed` inside the business transaction itself. So a claim past its lock (`locked_until`) whose request never committed
had no effect (its process died first) and is taken over by the next request with that key; one that
committed is never run again: until its answer is stored, retries get 409 idempotency_in_flight, and if the
process died between the commit and storing the answer, they keep getting 409 (the outcome is known to have
happened, the answer is lost) until the key expires after 24 h. A 5xx after the commit does not release it.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

import asyncpg
from litestar import Request
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api import dispatch_marks, problems
from api.auth import AUTH_KEY, signed_target
from domain import pg
from domain.ids import new_id
from domain.idempotency import rules, service
from domain.pg import tenant_connection

log = logging.getLogger("hostq.api.idempotency")

HEADER = b"idempotency-key"
REPLAYED = (b"idempotent-replayed", b"true")
#: Scope key of this request's claim id, read by api.deps.provide_session to mark it committed.
CLAIM_KEY = "hostq.idempotency_claim"
#: Scope key of the asyncpg connection that holds the claim, on which api.deps.db_for runs the handler.
CONNECTION_KEY = "hostq.idempotency_connection"
#: Scope key set when that connection is inside the request's transaction, which this middleware commits.
IN_TRANSACTION = "hostq.idempotency_in_transaction"
#: Taken right after the claim in the request's transaction: a failing handler's effect is rolled back to it.
EFFECT_SAVEPOINT = "hostq_effect"
_CLAIM_ATTEMPTS = 3


class IdempotencyMiddleware(ASGIMiddleware):
    """Run a keyed POST at most once per tenant and key; replay its stored answer to retries."""

    def __init__(self, lock_timeout: timedelta = timedelta(seconds=60)) -> None:
        self.lock_timeout = lock_timeout

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        keys = [value for name, value in scope["headers"] if name == HEADER] if scope["method"] == "POST" else None
        if not keys:
            await next_app(scope, receive, send)
            return
        request: Request = Request(scope, receive)
        key = keys[0].decode("latin-1") if len(keys) == 1 else ""
        if not rules.valid_key(key):
            await _problem(request, send, 400, "validation_error", "Validation failed",
                           "the Idempotency-Key header must be one value of 1..255 printable ASCII characters",
                           field_errors=[{"field": "Idempotency-Key", "message": "1..255 printable characters"}])
            return
        tenant_id: uuid.UUID = scope[AUTH_KEY].tenant_id  # type: ignore[literal-required]
        fingerprint = rules.fingerprint(scope["method"], signed_target(scope), await request.body())
        # The answer is sent once the connection is back in the pool: a client that does not read it (its socket
        # buffer full) must not hold a connection, and with enough of them every request's (a pipelined request
        # behind an unread answer would wait on its send for ever).
        answer = _Capture()
        try:
            await self._claim_and_run(request, tenant_id, key, fingerprint, scope, receive, answer, next_app)
        finally:
            if answer.messages:
                await answer.forward(send)

    async def _claim_and_run(self, request: Request, tenant_id: uuid.UUID, key: str, fingerprint: str,
                             scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        """Claim the key and run the request, or answer from what the key holds; `send` keeps the answer."""
        pool = scope["litestar_app"].state.resources.pg
        in_transaction = _runs_on_db(scope)
        # One connection for the whole request: claim, the handler's statements (api.deps.db_for), answer.
        async with tenant_connection(pool, tenant_id) as conn:
            for _ in range(_CLAIM_ATTEMPTS):
                if in_transaction:
                    claim_id = await self._claim_in_transaction(conn, tenant_id, key, fingerprint)
                    if claim_id is _BUSY:
                        await _in_flight(request, send, stale=False)
                        return
                else:  # the ORM handlers: a claim committed at once, marked by the handler's transaction
                    claim_id = await service.claim(conn, tenant_id, key, fingerprint, lock_timeout=self.lock_timeout)
                found = None if claim_id else await service.find(conn, tenant_id, key)
                if found is not None and found[1] and await service.take_over_abandoned(conn, tenant_id, key):
                    continue  # its process died before committing anything: claim it afresh
                if claim_id:
                    scope[CLAIM_KEY] = claim_id  # type: ignore[literal-required]
                    scope[CONNECTION_KEY] = conn  # type: ignore[literal-required]
                    if in_transaction:
                        scope[IN_TRANSACTION] = True  # type: ignore[literal-required]
                        scope[_KEY_AND_FINGERPRINT] = (key, fingerprint)  # type: ignore[literal-required]
                        await self._run_in_transaction(claim_id, conn, scope, receive, send, next_app)
                    else:
                        await self._run_once(claim_id, _Keys(conn), scope, receive, send, next_app)
                    return
                if found is not None:
                    await _answer_taken(request, send, *found, fingerprint)
                    return
                # The holder released the key between our insert and our read (its request failed): claim again.
        await _in_flight(request, send, stale=False)

    async def _claim_in_transaction(self, conn, tenant_id: uuid.UUID, key: str, fingerprint: str):
        """BEGIN the request's transaction with its claim: the claim id, None if the key is taken, _BUSY if a
        running transaction holds it."""
        claim_id = new_id()
        try:
            claim = service.claim_in_transaction_sql(claim_id, tenant_id, key, fingerprint,
                                                     lock_timeout=self.lock_timeout)
            await pg.begin(conn, tenant_id, then=f"{claim}; SAVEPOINT {EFFECT_SAVEPOINT}")
        except asyncpg.UniqueViolationError:
            await pg.rollback(conn)
            return None
        except asyncpg.LockNotAvailableError:
            await pg.rollback(conn)
            return _BUSY
        except BaseException as exc:
            await pg.rollback(conn, exc)
            raise
        return claim_id

    async def _run_in_transaction(self, claim_id: uuid.UUID, conn, scope: Scope, receive: Receive, send: Send,
                                  next_app: ASGIApp) -> None:
        """Run the request inside the transaction that holds its claim; commit its effect and its answer together
        (2xx, 4xx), or nothing (5xx, an exception, no complete answer)."""
        captured = _Capture()
        try:
            await next_app(scope, receive, captured)
        except BaseException as exc:
            dispatch_marks.discard(scope)
            await pg.rollback(conn, exc)
            raise
        if captured.complete and rules.storable(captured.status):  # type: ignore[arg-type]
            answer = service.complete_sql(claim_id, status=captured.status,  # type: ignore[arg-type]
                                          headers=rules.kept_headers(captured.headers), body=b"".join(captured.chunks))
            if scope.get(IN_TRANSACTION):  # type: ignore[call-overload]
                try:
                    await pg.commit(conn, before=answer)
                except Exception as exc:  # nothing committed, effect nor answer: a 5xx, not stored
                    dispatch_marks.discard(scope)
                    await pg.rollback(conn, exc)
                    await _failed(scope, receive, send, exc)
                    return
                dispatch_marks.send_committed(scope)  # the jobs its handler recorded, committed just now
            else:  # the handler failed and its whole transaction was rolled back, claim included: claim again
                await self._store_after_failure(conn, scope, claim_id, answer)
        else:
            dispatch_marks.discard(scope)
            await pg.rollback(conn)
        await captured.forward(send)

    async def _store_after_failure(self, conn, scope: Scope, claim_id: uuid.UUID, answer: str) -> None:
        """Record a failed handler's answer (a 4xx) under the key, in one round trip; if another request took the
        key meanwhile, its own answer is the one kept."""
        tenant_id: uuid.UUID = scope[AUTH_KEY].tenant_id  # type: ignore[literal-required]
        key, fingerprint = scope[_KEY_AND_FINGERPRINT]  # type: ignore[literal-required]
        try:
            claim = service.claim_in_transaction_sql(claim_id, tenant_id, key, fingerprint,
                                                     lock_timeout=self.lock_timeout)
            await pg.begin(conn, tenant_id, then=f"{claim}; {answer}; COMMIT")
        except (asyncpg.UniqueViolationError, asyncpg.LockNotAvailableError):
            await pg.rollback(conn)

    async def _run_once(self, claim_id: uuid.UUID, store: "_Keys", scope: Scope, receive: Receive, send: Send,
                        next_app: ASGIApp) -> None:
        captured = _Capture()
        try:
            await next_app(scope, receive, captured)
        except BaseException:
            # Not rendered by any exception handler (or raised after the answer): keep a complete answer,
            # else give the key back so the client may retry; then let the exception go on.
            if captured.complete:
                await store.settle(claim_id, captured)
                await captured.forward(send)
            else:
                await store.release(claim_id)
            raise
        if captured.complete:
            await store.settle(claim_id, captured)
        else:
            await store.release(claim_id)
        await captured.forward(send)


_BUSY = object()
_KEY_AND_FINGERPRINT = "hostq.idempotency_key"
#: The route opt key of api.deps.ON_DB.
ON_DB_OPT = "hostq.db"


def _runs_on_db(scope: Scope) -> bool:
    """Whether the route's handler runs on api.deps.db_for (its `opt` has ON_DB), i.e. can run inside the
    transaction that holds its claim."""
    opt = getattr(scope["route_handler"], "opt", None) or {}
    return bool(opt.get(ON_DB_OPT))


class _Capture:
    """An ASGI `send` that keeps the response messages instead of sending them."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.complete = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = list(message.get("headers") or [])
        elif message["type"] == "http.response.body":
            self.chunks.append(message.get("body", b""))
            self.complete = not message.get("more_body", False)
        self.messages.append(message)

    async def forward(self, send: Send) -> None:
        for message in self.messages:
            await send(message)


class _Keys:
    """Settling a claim once its request has run, on the request's connection."""

    def __init__(self, conn) -> None:
        self.conn = conn

    async def settle(self, claim_id: uuid.UUID, captured: _Capture) -> None:
        """Store a replayable answer, or release the key for a 5xx."""
        assert captured.status is not None
        if not rules.storable(captured.status):
            await self.release(claim_id)
            return
        try:
            await service.complete(self.conn, claim_id, status=captured.status,
                                   headers=rules.kept_headers(captured.headers), body=b"".join(captured.chunks))
        except Exception:
            # The effect is committed: never release here. The row stays in_flight (409) until it expires.
            log.exception("could not store the response of idempotency claim %s", claim_id)

    async def release(self, claim_id: uuid.UUID) -> None:
        """Give the key back (its request failed before committing anything)."""
        try:
            await service.release(self.conn, claim_id)
        except Exception:
            log.exception("could not release idempotency claim %s", claim_id)


async def _answer_taken(request: Request, send: Send, row, stale: bool, fingerprint: str) -> None:
    decision = rules.decide(row.fingerprint, row.state, fingerprint)
    if decision == rules.REUSED:
        await _problem(request, send, 422, "idempotency_key_reused", "Idempotency key reused",
                       "this Idempotency-Key was used with a different method, path or body")
    elif decision == rules.IN_FLIGHT:
        await _in_flight(request, send, stale=stale)
    else:
        body = bytes(row.response_body or b"")
        headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in row.response_headers or []]
        headers += [(b"content-length", str(len(body)).encode()), REPLAYED]
        await send({"type": "http.response.start", "status": row.response_status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})


async def _in_flight(request: Request, send: Send, *, stale: bool) -> None:
    if stale:
        # Its effect committed but its answer was lost (the process died): running it again would double it.
        await _problem(request, send, 409, "idempotency_in_flight", "Idempotency key in flight",
                       "the first request with this Idempotency-Key took effect but its answer was lost; "
                       "read the resource instead of sending the request again")
        return
    await _problem(request, send, 409, "idempotency_in_flight", "Idempotency key in flight",
                   "a request with this Idempotency-Key is still being processed; retry shortly",
                   headers={"Retry-After": "1"})


async def _failed(scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
    """Answer an error raised after the handler's answer was captured, as the app's exception handler would."""
    request: Request = Request(scope, receive)
    response = problems.handle(request, exc)
    await response.to_asgi_response(app=None, request=request)(scope, receive, send)


async def _problem(request: Request, send: Send, status: int, code: str, title: str, detail: str,
                   **kwargs) -> None:
    response = problems.problem(request, status, code, title, detail, **kwargs)
    await response.to_asgi_response(app=None, request=request)(request.scope, request.receive, send)
