"""The `hostq` command line (operations.md, 'Commands')."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading
import time
from typing import Callable

from domain.errors import DomainError
from hostq import argtypes, jobs_cli, servers_cli, tenants_cli
from hostq.sandbox import cli as sandbox_cli
from hostq.output import print_json
from hostq.stopping import (exit_zero_on_stop_signals, stop_signals_exit_zero, stop_status, stop_with_status,
                            stop_with_supervisor)
from domain.settings import DEV_KEK_FILE, Settings, SettingsError, load_settings

log = logging.getLogger("hostq")


def _db_upgrade(args, settings: Settings) -> None:
    from domain.migrate import upgrade
    done = upgrade(settings.database_url)
    if done.get("ahead"):
        print(f"hostq: warning: the database is at migration {done['revision']}, which this hostq does not have: a "
              "newer release migrated it; nothing to do (this release's processes run on it)", file=sys.stderr)
    print_json(done)


def _check_database(settings: Settings, *, secrets: bool = False, region: str | None = None,
                    serving: bool = False) -> Callable[[], None] | None:
    """Before a long-running process starts: that Redis takes the URL's database (_check_redis); the schema (see
    check_schema); with `secrets` (the API, workers), that HOSTQ_KEK opens the database's secrets; for a regional
    worker, that its region has a server.

    A Postgres that cannot be reached (down, starting or stopping, full) is one warning line, and the checks that
    need it wait for it rather than being skipped: a worker started with a wrong HOSTQ_KEK during an outage would
    otherwise fail each job it took `kek_mismatch` once Postgres was back. A worker, scheduler or relay (which can
    do nothing without Postgres) waits for it here, before starting. The API (`serving`) starts at once, so that
    its health checks answer; what is returned then starts, in a thread, the checks once Postgres answers, and
    the API stops (as a refusal at start would: one line, exit 2 or 1) if they refuse."""
    from domain.migrate import check_schema
    _check_redis(settings)
    _check_rabbitmq(settings)
    unreachable = check_schema(settings.database_url)
    if unreachable is None:
        _check_with_postgres(settings, secrets=secrets, region=region)
        return None
    if serving:
        print(f"hostq: warning: Postgres cannot be reached ({unreachable}): starting anyway, and checking the "
              "schema and HOSTQ_KEK once it answers (check DATABASE_URL if it is not just down)", file=sys.stderr)
        return lambda: threading.Thread(target=_check_once_back, args=(settings, secrets), daemon=True,
                                        name="hostq-start-checks").start()
    print(f"hostq: warning: Postgres cannot be reached ({unreachable}): waiting for it before starting (check "
          "DATABASE_URL if it is not just down)", file=sys.stderr)
    with stop_signals_exit_zero():
        _wait_for_postgres(settings)
        _check_with_postgres(settings, secrets=secrets, region=region)
    print("hostq: Postgres answers: starting", file=sys.stderr)
    return None


#: While Postgres cannot be reached at start: how often the process asks again, and says that it still waits.
POSTGRES_RETRY_S = 2.0
STILL_WAITING_S = 60.0


def _wait_for_postgres(settings: Settings) -> None:
    """Return once Postgres answers and the schema is this code's (RuntimeError, one line, when it is not)."""
    from domain.migrate import check_schema
    said_at = time.monotonic()
    while (unreachable := check_schema(settings.database_url)) is not None:
        if time.monotonic() - said_at >= STILL_WAITING_S:
            print(f"hostq: warning: still waiting for Postgres ({unreachable})", file=sys.stderr)
            said_at = time.monotonic()
        time.sleep(POSTGRES_RETRY_S)


def _check_with_postgres(settings: Settings, *, secrets: bool, region: str | None) -> None:
    """The checks that read the database, Postgres answering; an outage while they run waits for it again."""
    from domain.outages import is_outage
    while True:
        try:
            if secrets:
                _check_kek(settings)
            if region is not None:
                _check_region(settings, region)
            return
        except Exception as exc:
            if not is_outage(exc):
                raise
        _wait_for_postgres(settings)


def _check_once_back(settings: Settings, secrets: bool) -> None:
    """The API's checks, in a thread of their own, once Postgres answers; a refusal (or a database error, such as
    a database that does not exist) stops the API with the same line and exit status as at start. A bug in a
    check is logged, and the API goes on."""
    try:
        _wait_for_postgres(settings)
        _check_with_postgres(settings, secrets=secrets, region=None)
    except SettingsError as exc:
        print(f"hostq: configuration error: {exc}: stopping", file=sys.stderr)
        stop_with_status(2)
    except (DomainError, ValueError, RuntimeError) as exc:
        print(f"hostq: {exc}: stopping", file=sys.stderr)
        stop_with_status(1)
    except Exception as exc:
        if (problem := _database_problem(exc)) is not None:  # e.g. the database does not exist
            print(f"hostq: {problem}: stopping", file=sys.stderr)
            stop_with_status(1)
        else:  # a bug in a check: its traceback, and the API goes on
            log.exception("the start-up checks failed; going on without them")
    else:
        print("hostq: Postgres answers: the start-up checks passed", file=sys.stderr)


def _check_redis(settings: Settings) -> None:
    """Refuse (one line) a Redis that answers but refuses the URL's database (an index out of its range); one
    warning line for a Redis that cannot be reached: the process starts and waits for it."""
    import redis
    urls = {"REDIS_URL": settings.redis_url}
    if settings.broker_url != settings.redis_url and settings.broker_url.startswith(("redis://", "rediss://")):
        urls["HOSTQ_BROKER_URL"] = settings.broker_url
    for name, url in urls.items():
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
            if client.connection_pool.connection_kwargs.get("password") is not None:
                # redis-py goes on without a password this Redis does not have; hostq's own client does not
                client.execute_command("AUTH", *_credentials(client))
        except (redis.ResponseError, redis.AuthenticationError) as exc:
            raise SettingsError(f"{name}: Redis refuses it: {exc}") from None
        except redis.RedisError as exc:
            print(f"hostq: warning: Redis cannot be reached ({exc}): starting anyway, and waiting for it (check "
                  f"{name} if it is not just down)", file=sys.stderr)
        finally:
            client.close()


def _credentials(client) -> tuple[str, ...]:
    """AUTH's arguments for a redis-py client's URL: (user, password), or (password,) for the default user."""
    options = client.connection_pool.connection_kwargs
    return (options["username"], options["password"]) if options.get("username") else (options["password"],)


def _check_rabbitmq(settings: Settings) -> None:
    """Refuse (one line) a RabbitMQ that answers but refuses HOSTQ_BROKER_URL's user, password or virtual host: a
    process would start and fail every send or consume, for ever. One warning line for a RabbitMQ that cannot be
    reached: the process starts and waits for it."""
    if not settings.broker_url.startswith(("amqp://", "amqps://")):
        return
    import pika
    from pika.adapters.utils.connection_workflow import AMQPConnectorException
    from workers.dispatch import amqp_url
    try:
        pika.BlockingConnection(pika.URLParameters(amqp_url(settings.broker_url))).close()
    except (pika.exceptions.ProbableAuthenticationError, pika.exceptions.ProbableAccessDeniedError,
            pika.exceptions.AuthenticationError) as exc:
        closed = exc.args[0] if exc.args else None
        said = getattr(closed, "reply_text", None) or str(exc)
        raise SettingsError(f"HOSTQ_BROKER_URL: RabbitMQ refuses it: {said} (check its user, password and "
                            "virtual host)") from None
    except (pika.exceptions.AMQPError, AMQPConnectorException, OSError) as exc:  # the latter: a handshake timeout
        print(f"hostq: warning: RabbitMQ cannot be reached ({exc!r}): starting anyway, and "
              "waiting for it (check HOSTQ_BROKER_URL if it is not just down)", file=sys.stderr)


def _check_region(settings: Settings, region: str) -> None:
    """Warn when no WHM server is registered in the region a worker serves (a typo, most likely)."""
    from hostq.admin import list_servers
    if not asyncio.run(list_servers(settings, region=region)):
        print(f"hostq: warning: no WHM server is registered in region {region!r}: this worker finds no jobs until "
              f"one is (`hostq servers add --region {region} ...`)", file=sys.stderr)


def _check_kek(settings: Settings) -> None:
    """Refuse to start (one line) a process whose HOSTQ_KEK opens none of the database's sealed secrets: it would
    start, then fail every signed request or WHM call. Some but not all: a warning (a dev database can hold
    secrets of two keys)."""
    from hostq.admin import refuse_foreign_kek
    if warning := refuse_foreign_kek(settings):
        print(f"hostq: warning: {warning}", file=sys.stderr)


#: Seconds `hostq api` keeps an idle keep-alive connection open (uvicorn's `timeout_keep_alive`, 5 by default).
#: HTTP/1.1 lets either side close an idle connection, and a request a client sends on one just as the server
#: closes it is lost with a connection reset (httpx.ReadError, before any answer, no access-log line): the
#: server's FIN crosses the request, which reaches a closed socket. Clients expire their idle connections first
#: when the server waits longer than they do: httpx (5 s, like uvicorn's default, and counted from a later
#: moment: when the client has read the answer), aiohttp (15 s), a load balancer in front (AWS ALB: 60 s).
API_KEEP_ALIVE_S = 75


def _api(args, settings: Settings) -> None:
    import uvicorn
    settings.require_kek()
    check_later = _check_database(settings, secrets=True, serving=True)
    exit_zero_on_stop_signals()
    if check_later is not None:
        check_later()  # after the handlers above: its stop ends the process with the status it sets
    options = dict(host=args.host, port=args.port, workers=args.workers, server_header=False, date_header=True,
                   log_level="warning", timeout_graceful_shutdown=30, timeout_keep_alive=API_KEEP_ALIVE_S)
    if args.workers > 1:
        from hostq.api_processes import serve_in_processes
        serve_in_processes("api.asgi:app", **options)
    else:
        uvicorn.run("api.asgi:app", **options)
    if stop_status():  # with --workers, uvicorn's supervisor returns rather than raising the signal again
        sys.exit(stop_status())


def _worker(args, settings: Settings) -> None:
    from workers.dispatch import make_broker
    settings.require_kek()
    make_broker(settings)  # refuse an unsupported broker URL with one line, before forking
    _check_database(settings, secrets=True, region=args.region)
    argv = [sys.executable, "-m", "dramatiq", "workers.main", "--processes", str(args.processes),
            "--threads", str(args.threads)]
    env = dict(os.environ)
    if args.region:
        queue = f"provisioning.{args.region}"
        env["HOSTQ_WORKER_QUEUES"] = queue
        argv += ["--queues", queue]
    os.execvpe(sys.executable, argv, env)


#: The scheduler's and relay's log lines, in the form of the workers' (Dramatiq's) without the thread.
CLOCK_LOG_FORMAT = "[%(asctime)s] [PID %(process)d] [%(name)s] [%(levelname)s] %(message)s"


def _scheduler(args, settings: Settings) -> None:
    from schedules.clock import run
    _check_database(settings)
    logging.basicConfig(level=logging.INFO, format=CLOCK_LOG_FORMAT)
    asyncio.run(run(settings, leader=True))


def _relay(args, settings: Settings) -> None:
    from schedules.clock import run
    _check_database(settings)
    logging.basicConfig(level=logging.INFO, format=CLOCK_LOG_FORMAT)
    asyncio.run(run(settings, leader=False))


def _dev(args, settings: Settings) -> None:
    from hostq.dev import run_dev
    sys.exit(run_dev(args))


def _call(args, settings: Settings) -> None:
    from hostq.call import call
    sys.exit(call(args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hostq", description="hostq: job orchestration for hosting resellers")
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="database").add_subparsers(dest="action", required=True)
    db.add_parser("upgrade", help="create the database if missing and migrate it").set_defaults(run=_db_upgrade)

    tenants_cli.register(sub)
    servers_cli.register(sub)

    api = sub.add_parser("api", help="the HTTP API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=argtypes.port, default=8000)
    api.add_argument("--workers", type=argtypes.positive, default=1)
    api.set_defaults(run=_api)

    worker = sub.add_parser("worker", help="a Dramatiq worker")
    worker.add_argument("--region", type=argtypes.region, help="serve provisioning.<region> only")
    worker.add_argument("--processes", type=argtypes.positive, default=1)
    worker.add_argument("--threads", type=argtypes.positive, default=8)
    worker.set_defaults(run=_worker)

    sub.add_parser("scheduler", help="the clock (one leader)", description=(
        "Runs until SIGTERM. One leader among any number of schedulers ticks every 2 s: the outbox relay "
        "(jobs recorded but not sent after HOSTQ_RELAY_GRACE_S), the stalled-job sweep (jobs sent but "
        "undelivered for HOSTQ_RESEND_STALLED_S; at once, with a Redis broker that restarted without its data) "
        "and the hourly expiry of idempotency keys.")).set_defaults(
            run=_scheduler)
    sub.add_parser("relay", help="re-send recorded but undispatched jobs", description=(
        "Runs until SIGTERM, without the scheduler's leader lock: every 2 s it sends the jobs recorded but not "
        "sent after HOSTQ_RELAY_GRACE_S (default 5), and at least every minute it sends again the jobs sent "
        "but undelivered for HOSTQ_RESEND_STALLED_S (default 600), or running longer than an attempt can (at "
        "once, with a Redis broker that restarted without its data). "
        "Use the same HOSTQ_BROKER_URL, DATABASE_URL and HOSTQ_NAMESPACE as the workers.")).set_defaults(
            run=_relay)

    sandbox_cli.register(sub)

    dev = sub.add_parser("dev", help="everything on one machine, with a demo tenant")
    dev.add_argument("--port", type=argtypes.port, default=8000, help="the API's port (default: 8000)")
    dev.add_argument("--whm-port", type=argtypes.port, default=2087,
                     help="the first region's fake WHM (default: 2087); the next regions use the following ports")
    dev.add_argument("--psp-port", type=argtypes.port, default=8089,
                     help="the fake PSP (default: 8089); HOSTQ_PSP_URL is set to it for hostq's processes")
    dev.add_argument("--smtp-port", type=argtypes.port, default=1025,
                     help="the fake mail server's SMTP port (default: 1025); HOSTQ_SMTP_URL is set to it")
    dev.add_argument("--mail-port", type=argtypes.port, default=8025,
                     help="the fake mail server's HTTP port, for its messages (default: 8025)")
    dev.add_argument("--regions", type=argtypes.regions, default=["us"],
                     help="comma-separated regions, each with its own fake WHM and worker (default: us)")
    dev.set_defaults(run=_dev)

    call = sub.add_parser("call", help="send a signed request (HOSTQ_API_URL, HOSTQ_API_KEY, HOSTQ_SIGNING_SECRET)")
    call.add_argument("method")
    call.add_argument("path", help="e.g. /v1/customers?limit=5")
    call.add_argument("--data", help="JSON body")
    call.set_defaults(run=_call)
    jobs_cli.register(sub)
    return parser


def _database_problem(exc: BaseException) -> str | None:
    """One line for an error of Postgres (or of SQLAlchemy about it), else None.

    SQLAlchemy wraps asyncpg's error (`.orig`, then its `__cause__`): the chain is walked for the asyncpg class,
    whose type says what the operator should do.
    """
    import asyncpg
    from sqlalchemy.exc import SQLAlchemyError

    from domain.pg import APP_ROLE
    seen, link = [], exc
    while link is not None and link not in seen:
        seen.append(link)
        if isinstance(link, asyncpg.InvalidCatalogNameError):
            return f"{link}: check DATABASE_URL, or create and migrate it with `hostq db upgrade`"
        if isinstance(link, asyncpg.UndefinedTableError) or (
                isinstance(link, asyncpg.UndefinedObjectError) and f'role "{APP_ROLE}"' in str(link)):
            # (the role is the first migration's, made once per Postgres: a new one has none)
            return f"{link}: the database is not migrated; run `hostq db upgrade`"
        if isinstance(link, (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)):
            return f"Postgres refused the login ({link}): check DATABASE_URL"
        if isinstance(link, asyncpg.PostgresError):
            return f"database error: {str(link).splitlines()[0] if str(link) else type(link).__name__}"
        link = getattr(link, "orig", None) or link.__cause__
    if isinstance(exc, SQLAlchemyError):
        return f"database error: {str(exc).splitlines()[0]}"
    return None


def _quiet_stdout() -> None:
    """stdout's reader went away (`hostq jobs list | head`): stop writing, with no message."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _development_kek() -> None:
    """In development, without HOSTQ_KEK, use the key `hostq dev` keeps in .hostq/dev-kek, if there is one here:
    commands run beside it (from its directory) then read the secrets it sealed."""
    path = DEV_KEK_FILE
    if os.environ.get("HOSTQ_ENV", "development") == "development" and not os.environ.get("HOSTQ_KEK") \
            and path.is_file():
        os.environ["HOSTQ_KEK"] = path.read_text().strip()


def main(argv: list[str] | None = None) -> None:
    """Parse, read settings once, run; errors are one line on stderr and a non-zero exit."""
    stop_with_supervisor()
    args = _parser().parse_args(argv)
    try:
        _development_kek()
        settings = load_settings()
        args.run(args, settings)
    except SettingsError as exc:
        print(f"hostq: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    except (DomainError, ValueError, RuntimeError) as exc:
        print(f"hostq: {exc}", file=sys.stderr)
        sys.exit(1)
    except BrokenPipeError:
        _quiet_stdout()
        sys.exit(1)
    except (OSError, ConnectionError) as exc:
        print(f"hostq: cannot reach a dependency: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        problem = _database_problem(exc)
        if problem is None:
            raise  # a bug: its traceback is what a report needs
        print(f"hostq: {problem}", file=sys.stderr)
        sys.exit(1)
