"""`hostq jobs list|show|retry|cancel`: ops on jobs from the terminal (operations.md, 'Commands')."""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from domain.jobs import rules
from domain.times import rfc3339
from hostq.argtypes import positive
from hostq.output import print_json

if TYPE_CHECKING:
    from domain.jobs.models import Job, JobAttempt
    from domain.settings import Settings

# The database, broker and model modules are imported inside the functions that use them, as in
# hostq/cli.py: `register` runs on every `hostq` invocation and must stay quick to import.


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `jobs` command tree to the `hostq` parser."""
    jobs = sub.add_parser("jobs", help="list, show, retry and cancel jobs")
    jobs = jobs.add_subparsers(dest="action", required=True)

    listing = jobs.add_parser("list", help="jobs as JSON lines, newest first")
    listing.add_argument("--status", choices=rules.STATUSES)
    listing.add_argument("--kind", help="e.g. provision.create")
    listing.add_argument("--tenant", help="tenant slug")
    listing.add_argument("--limit", type=positive, default=100, help="at most this many jobs (default 100)")
    listing.set_defaults(run=_list)

    show = jobs.add_parser("show", help="one job as JSON, with every attempt of every round")
    show.add_argument("id", metavar="ID", help="job id")
    show.set_defaults(run=_show)

    retry = jobs.add_parser("retry", help="put failed jobs back to queued for a fresh round of attempts")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", nargs="*", default=[], metavar="ID", help="job ids")
    which.add_argument("--status", choices=[rules.FAILED], help="every failed job (of --kind, if given)")
    retry.add_argument("--kind", help="with --status: only jobs of this kind")
    retry.add_argument("--adopt", action="store_true",
                       help="with ids of provision.create jobs that failed whm_account_made_outside: the WHM account "
                            "with the service's username and domain is the service's, and the retry adopts it")
    retry.set_defaults(run=_retry)

    cancel = jobs.add_parser("cancel", help="cancel queued, retrying or failed jobs (never a running one)")
    cancel.add_argument("ids", nargs="+", metavar="ID", help="job ids")
    cancel.add_argument("--force", action="store_true",
                        help="also cancel service actions whose WHM call may already have taken effect")
    cancel.set_defaults(run=_cancel)


def _warn_unknown_kind(kind: str | None) -> None:
    """A kind no actor has is most likely a typo: say so (the command goes on; nothing of hostq's matches it)."""
    if kind is not None and kind not in rules.KINDS:
        print(f"hostq: warning: no job kind {kind!r} in hostq (kinds: {', '.join(rules.KINDS)})", file=sys.stderr)


def _list(args, settings: Settings) -> None:
    _warn_unknown_kind(args.kind)
    lines, more = asyncio.run(list_page(settings, status=args.status, kind=args.kind, tenant=args.tenant,
                                        limit=args.limit))
    for line in lines:
        print_json(line)
    if more:
        print(f"hostq: the newest {len(lines)} shown; more jobs match: raise --limit to see them", file=sys.stderr)


def _show(args, settings: Settings) -> None:
    print_json(asyncio.run(show(settings, args.id)))


def _retry(args, settings: Settings) -> None:
    if args.ids and args.kind:
        raise ValueError("--kind goes with --status failed, not with job ids")
    if args.adopt and not args.ids:
        raise ValueError("--adopt goes with job ids, each checked by an operator, not with --status")
    _warn_unknown_kind(args.kind)
    _print_outcome(asyncio.run(retry(settings, ids=args.ids, kind=args.kind, adopt=args.adopt)))


def _cancel(args, settings: Settings) -> None:
    _print_outcome(asyncio.run(cancel(settings, ids=args.ids, force=args.force)))


def _print_outcome(outcome: dict) -> None:
    """Print a retry's or cancel's outcome; exit 1 when an id it was given names no job (a typo, most likely: a
    script must not take it for done). A job skipped for its state is an answer, not an error."""
    from domain.jobs.ops import NO_SUCH_JOB, NOT_AN_ID

    print_json(outcome)
    unknown = [s["id"] for s in outcome["skipped"] if s["reason"] in (NOT_AN_ID, NO_SUCH_JOB)]
    if unknown:
        print(f"hostq: {len(unknown)} of the ids given name no job: {', '.join(unknown)}", file=sys.stderr)
        sys.exit(1)


async def list_page(settings: Settings, *, status: str | None = None, kind: str | None = None,
                    tenant: str | None = None, limit: int = 100) -> tuple[list[dict], bool]:
    """`hostq jobs list`: up to `limit` jobs, newest first, one dict per JSON line; and whether more match."""
    from domain.jobs import ops
    from domain.pagination import MAX_LIMIT
    from domain.tenants.service import tenant_by_slug

    async def work(session):
        tenant_id = (await tenant_by_slug(session, tenant)).id if tenant else None
        lines, cursor = [], None
        while len(lines) < limit:
            rows, cursor = await ops.list_jobs(session, status=status, kind=kind, tenant_id=tenant_id,
                                               limit=min(MAX_LIMIT, limit - len(lines)), cursor=cursor)
            lines += [job_line(job) for job in rows]
            if cursor is None:
                break
        return lines, cursor is not None
    return await _in_transaction(settings, work)


async def show(settings: Settings, job_id: str) -> dict:
    """`hostq jobs show`: the job as `jobs list` prints it, with its attempt history (`history`)."""
    from domain.jobs import ops

    async def work(session):
        job, attempts = await ops.job_with_history(session, job_id)
        return {**job_line(job), "history": [attempt_line(attempt) for attempt in attempts]}
    return await _in_transaction(settings, work)


#: Jobs retried or cancelled per transaction: each batch's rows (jobs, services, a server's counter) stay locked
#: only until it commits, and is sent before the next batch begins, so orders and workers wait on no long
#: transaction.
BATCH = 200


async def retry(settings: Settings, *, ids: list[str] | None = None, kind: str | None = None,
                adopt: bool = False) -> dict:
    """`hostq jobs retry`: these jobs (`adopt`: see ops.retry_jobs), or (without ids) every failed one of `kind`;
    each batch of BATCH committed, then sent."""
    from domain.jobs import ops

    if ids:
        return await _in_batches(settings, ids, lambda session, batch: ops.retry_jobs(session, batch, adopt=adopt))
    outcome: dict = {"retried": [], "skipped": []}

    async def each_batch(run: Callable[[Callable[[Any], Awaitable[Any]]], Awaitable[Any]]) -> None:
        after = None
        while True:
            part = _merge(outcome, await run(lambda session, after=after: ops.retry_matching(
                session, status=rules.FAILED, kind=kind, after=after, limit=BATCH)))
            seen = [uuid.UUID(job_id) for job_id in part["retried"]] + [uuid.UUID(s["id"]) for s in part["skipped"]]
            if len(seen) < BATCH:
                return
            after = max(seen)

    await _in_transactions(settings, each_batch)
    return outcome


async def cancel(settings: Settings, *, ids: list[str], force: bool = False) -> dict:
    """`hostq jobs cancel`: each batch of BATCH in a transaction of its own."""
    from domain.jobs import ops
    return await _in_batches(settings, ids, lambda session, batch: ops.cancel_jobs(session, batch, force=force))


async def _in_batches(settings: Settings, ids: list[str], act: Callable[[Any, list[str]], Awaitable[dict]]) -> dict:
    """`act(session, batch)` on the ids, BATCH at a time, each batch one transaction; the outcomes merged."""
    unique = list(dict.fromkeys(ids))
    outcome: dict = {}

    async def each_batch(run: Callable[[Callable[[Any], Awaitable[Any]]], Awaitable[Any]]) -> None:
        for start in range(0, max(len(unique), 1), BATCH):  # one batch at least: the outcome's keys
            _merge(outcome, await run(lambda session, batch=unique[start:start + BATCH]: act(session, batch)))

    await _in_transactions(settings, each_batch)
    return outcome


def _merge(outcome: dict, part: dict) -> dict:
    """Add a batch's lists (retried or cancelled, skipped) to the command's outcome; the batch's."""
    for key, values in part.items():
        outcome.setdefault(key, []).extend(values)
    return part


def job_line(job: Job) -> dict:
    """One job as `hostq jobs list` prints it: the API's fields, and the tenant and round."""
    return {"id": str(job.id), "kind": job.kind, "status": job.status, "attempts": job.attempts,
            "max_attempts": job.max_attempts, "round": job.round,
            "tenant_id": str(job.tenant_id) if job.tenant_id else None,
            "resource": {"type": job.resource_type, "id": str(job.resource_id)} if job.resource_id else None,
            "error": {"code": job.error_code, "message": job.error_message or ""} if job.error_code else None,
            "result": job.result, "created_at": rfc3339(job.created_at), "started_at": rfc3339(job.started_at),
            "finished_at": rfc3339(job.finished_at), "next_attempt_at": rfc3339(job.next_attempt_at, up=True),
            "request_id": job.request_id}


def attempt_line(attempt: JobAttempt) -> dict:
    """One attempt in `hostq jobs show`'s history; `outcome` is None while it runs."""
    return {"round": attempt.round, "attempt": attempt.attempt, "started_at": rfc3339(attempt.started_at),
            "finished_at": rfc3339(attempt.finished_at), "outcome": attempt.outcome,
            "error": ({"code": attempt.error_code, "message": attempt.error_message or ""}
                      if attempt.error_code else None)}


async def _in_transaction(settings: Settings, work: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run `work` in one transaction; after it commits, send the jobs it put back to `queued`."""
    return await _in_transactions(settings, lambda run: run(work))


async def _in_transactions(settings: Settings, steps: Callable[[Any], Awaitable[Any]]) -> Any:
    """What `steps(run)` returns, where each `run(work)` is one transaction after whose commit the jobs it put back
    to `queued` are sent; one database connection for them all."""
    import domain.models  # noqa: F401  (every table known, so foreign keys resolve in this process)
    from domain.db import make_engine, make_sessionmaker
    from domain.jobs.service import take_outbox

    engine = make_engine(settings.database_url, pool_size=1)
    sendable: bool | None = None  # found out once, at the first send
    try:
        sessions = make_sessionmaker(engine)

        async def run(work: Callable[[Any], Awaitable[Any]]) -> Any:
            nonlocal sendable
            async with sessions() as session:
                async with session.begin():
                    result = await work(session)
                requeued = [job.id for job in take_outbox(session)]
            if requeued:
                if sendable is None:
                    sendable = _broker_is_the_workers(settings)
                if sendable:
                    await _send(settings, sessions, requeued)
            return result
        return await steps(run)
    finally:
        await engine.dispose()


def _broker_is_the_workers(settings: Settings) -> bool:
    """Whether this command's broker is the one the workers consume; if not, say so (the relay sends instead)."""
    from workers.dispatch import broker_identity

    elsewhere = _workers_broker_elsewhere(settings)
    if elsewhere:
        print(f"hostq: the workers consume {elsewhere}, not this command's broker ({broker_identity(settings)}): "
              "the jobs are left to the scheduler's relay, which sends them within seconds (set HOSTQ_BROKER_URL "
              "as the workers do to send them at once)", file=sys.stderr)
    return not elsewhere


async def _send(settings: Settings, sessions, job_ids: list[uuid.UUID]) -> None:
    from domain.db import session_scope
    from domain.jobs import ops
    from domain.jobs.service import mark_dispatched
    from workers.dispatch import dispatch, make_broker

    # Sent while the rows are locked, as the relay does, so the relay cannot send the same job too
    # (a retried job's created_at is old: the relay's grace period does not protect it).
    broker = make_broker(settings)
    try:
        async with session_scope(sessions) as session:
            jobs = await ops.claim_undispatched(session, job_ids)
            sent = dispatch(broker, jobs)
            if sent:
                await mark_dispatched(session, sent)
    except Exception as exc:  # the change is committed: the relay sends what is not marked sent
        print(f"hostq: jobs requeued; the scheduler's relay sends those this command could not mark as sent (a job "
              f"sent twice still runs once) ({type(exc).__name__}: {exc})", file=sys.stderr)
    finally:
        broker.close()


def _workers_broker_elsewhere(settings: Settings) -> str | None:
    """The broker the workers announced (workers/heartbeat.py AnnounceBroker), when it is not this process's."""
    import redis

    from workers.dispatch import announced_key, broker_identity

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        announced = client.get(announced_key(settings))
    except redis.RedisError:  # the send will say what is wrong, or work
        return None
    finally:
        client.close()
    if announced is None or announced.decode() == broker_identity(settings):
        return None
    return announced.decode()

