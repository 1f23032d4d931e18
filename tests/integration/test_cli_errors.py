"""The command line's errors: one line on stderr and a non-zero exit, never a traceback (operations.md)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from alembic import command

from domain.migrate import alembic_config, create_database_if_missing, drop_database
from domain.pg import connect
from tests.conftest import BASE_DB, RUN, free_port


def _hostq(hostq_cmd, env: dict, *argv: str, **run) -> subprocess.CompletedProcess:
    return subprocess.run([*hostq_cmd, *argv], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=60, **run)


def _one_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert done.stdout == "" and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    return done.stderr.strip()


@pytest.fixture
def scratch_db(test_env):
    """The URL of a database of this test's own (created empty, dropped afterwards)."""
    url = f"{BASE_DB}/hostq_test_{RUN}_scratch"
    yield url
    asyncio.run(drop_database(url))


@pytest.mark.parametrize("argv", [("jobs", "list"), ("servers", "list"), ("tenants", "create", "--name", "X"),
                                  ("jobs", "retry", "01a20000-0000-7000-8000-000000000000"),
                                  ("worker", "--region", "us"), ("scheduler",), ("api",)])
def test_a_database_that_does_not_exist_is_one_line(hostq_cmd, test_env, argv):
    env = {**test_env, "DATABASE_URL": f"{BASE_DB}/hostq_test_{RUN}_absent"}
    line = _one_line(_hostq(hostq_cmd, env, *argv))
    assert line == (f'hostq: database "hostq_test_{RUN}_absent" does not exist: check DATABASE_URL, or create '
                    "and migrate it with `hostq db upgrade`")


def test_a_database_not_migrated_or_behind_is_one_line_and_no_process_starts(hostq_cmd, test_env, scratch_db):
    env = {**test_env, "DATABASE_URL": scratch_db}
    asyncio.run(create_database_if_missing(scratch_db))
    assert _one_line(_hostq(hostq_cmd, env, "jobs", "list")) == (
        'hostq: relation "jobs" does not exist: the database is not migrated; run `hostq db upgrade`')
    assert _one_line(_hostq(hostq_cmd, env, "worker", "--region", "us")) == (
        "hostq: the database is not migrated: run `hostq db upgrade`")
    command.upgrade(alembic_config(scratch_db), "0001")
    line = _one_line(_hostq(hostq_cmd, env, "worker", "--region", "us"))
    assert line.startswith("hostq: the database is at migration 0001 and this hostq needs ")
    assert line.endswith(": run `hostq db upgrade`")


def test_a_reader_that_goes_away_ends_the_output_quietly(hostq_cmd, test_env, settings):
    """`hostq servers list | head -0`: no 'cannot reach a dependency: Broken pipe', no traceback."""
    _hostq(hostq_cmd, test_env, "servers", "add", "--region", "pipe", "--url", "https://whm-pipe.example:2087",
           "--username", "root", "--token", "t")
    child = subprocess.Popen([*hostq_cmd, "servers", "list"], env={**os.environ, **test_env},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    child.stdout.close()  # long before the command has started up and written its first line
    assert child.wait(timeout=60) == 1
    assert child.stderr.read() == ""


def test_call_with_data_that_is_not_json_says_so(hostq_cmd, test_env):
    env = {**test_env, "HOSTQ_API_KEY": "k", "HOSTQ_SIGNING_SECRET": "s", "HOSTQ_API_URL": "http://127.0.0.1:9"}
    done = _hostq(hostq_cmd, env, "call", "POST", "/v1/customers", "--data", "not json")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("hostq: --data is not JSON: Expecting value"), done.stderr


@pytest.mark.parametrize("argv", [("worker", "--region", "us"), ("api", "--port", "1"),
                                  ("tenants", "create", "--name", "Sealed elsewhere"),
                                  ("servers", "add", "--region", "kek", "--url", "https://whm-kek.example:2087",
                                   "--username", "root", "--token", "t")])
async def test_a_kek_that_opens_none_of_the_databases_secrets_stops_the_process_at_start(hostq_cmd, test_env, tenant,
                                                                                         argv):
    # The run's database holds at least this test's tenant's key, sealed with the run's HOSTQ_KEK.
    wrong = {**test_env, "HOSTQ_KEK": base64.b64encode(os.urandom(32)).decode()}
    done = _hostq(hostq_cmd, wrong, *argv)
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr, done
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("hostq: configuration error: HOSTQ_KEK opens none of the ") and line.endswith(
        "it is not the key they were sealed with; set HOSTQ_KEK to that key"), line


@pytest.mark.parametrize("argv", [("worker", "--region", "us"), ("scheduler",), ("api", "--port", "1")])
@pytest.mark.parametrize("variable, value, says", [
    ("REDIS_URL", "redis://127.0.0.1:6379/abc", "REDIS_URL: the path must be a Redis database number"),
    ("REDIS_URL", "redis://127.0.0.1:6379/99", "REDIS_URL: Redis refuses it: DB index is out of range"),
    ("REDIS_URL", "redis://:a-password@127.0.0.1:6379/0",  # (this machine's Redis has none)
     "REDIS_URL: Redis refuses it: AUTH <password> called without any password configured"),
    ("DATABASE_URL", f"{BASE_DB}/x?foo=bar", "DATABASE_URL: unsupported connection option(s) foo: use passfile"),
    ("HOSTQ_BROKER_URL", "amqp://guest:not-the-password@127.0.0.1:5672/%2F",
     "HOSTQ_BROKER_URL: RabbitMQ refuses it: ConnectionClosedByBroker: (403) 'ACCESS_REFUSED"),
    ("HOSTQ_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/hostq-no-such-vhost",
     "HOSTQ_BROKER_URL: RabbitMQ refuses it: ConnectionClosedByBroker: (530) 'NOT_ALLOWED - vhost "
     "hostq-no-such-vhost not found'")])
def test_a_redis_database_or_a_database_url_hostq_cannot_use_stops_the_process_at_start(hostq_cmd, test_env, argv,
                                                                                       variable, value, says):
    """redis-py would use database 0 for /abc, and /99 fails later on every command; asyncpg would send `foo` to
    Postgres as a setting; a RabbitMQ that refuses the user or has no such virtual host would leave a worker
    logging two CRITICAL lines every 3 s for ever: each is one line at start, never a traceback or a process on
    the wrong database."""
    done = _hostq(hostq_cmd, {**test_env, variable: value}, *argv)
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr, done
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"hostq: configuration error: {says}"), line


def test_a_worker_for_a_region_without_servers_says_so_and_still_starts(hostq_cmd, test_env):
    region = f"nowhere{uuid.uuid4().hex[:6]}"
    worker = subprocess.Popen([*hostq_cmd, "worker", "--region", region], env={**os.environ, **test_env},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        # Its first lines (the run's database may also hold secrets of another key, which another line names).
        lines = []
        while "hostq: Postgres answers: starting" not in lines and len(lines) < 5:  # after any warning of the checks
            lines.append(worker.stderr.readline().strip())
        assert worker.poll() is None  # a warning: the worker runs (a server may be added later)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
    assert (f"hostq: warning: no WHM server is registered in region '{region}': this worker finds no jobs "
            f"until one is (`hostq servers add --region {region} ...`)") in lines, lines


def test_an_api_whose_postgres_cannot_be_reached_says_so_and_waits_for_it(hostq_cmd, test_env):
    env = {**os.environ, **test_env, "DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:1/hostq"}
    api = subprocess.Popen([*hostq_cmd, "api", "--port", str(free_port())], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        first = api.stderr.readline().strip()
        assert api.poll() is None  # it runs, and /health/ready answers 503 until Postgres is back
    finally:
        os.killpg(api.pid, signal.SIGTERM)
        api.wait(timeout=30)
    assert first.startswith("hostq: warning: Postgres cannot be reached (") and first.endswith(
        "starting anyway, and checking the schema and HOSTQ_KEK once it answers (check DATABASE_URL if it is not "
        "just down)"), first


def test_a_worker_whose_postgres_is_full_says_so_and_waits_for_it(hostq_cmd, test_env, settings):  # settings: run db
    """Postgres at its connection limit refuses with "too many clients": an outage, as for a Postgres that is down.
    Before, the process exited 1 with a database error, and `hostq dev` restarting it into a full Postgres counted
    five exits in a minute and stopped the whole stack."""
    import asyncpg

    from domain.pg import plain_dsn
    role = f"hostq_test_full_{RUN}"
    admin = plain_dsn(test_env["DATABASE_URL"])

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0'))  # as full as can be, for this role
    env = {**os.environ, **test_env, "DATABASE_URL": test_env["DATABASE_URL"].replace("://postgres@", f"://{role}@")}
    try:
        worker = subprocess.Popen([*hostq_cmd, "worker", "--region", "us"], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            first = worker.stderr.readline().strip()
            assert worker.poll() is None, worker.stderr.read()  # it waits, and starts once Postgres has room
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=30)
    finally:
        asyncio.run(run(f'DROP ROLE "{role}"'))
    assert first.startswith("hostq: warning: Postgres cannot be reached (too many connections for role") and \
        first.endswith("waiting for it before starting (check DATABASE_URL if it is not just down)"), first


class _Forwarder:
    """A TCP port that forwards to the machine's Postgres once `open()` is called; until then nothing listens on
    it: a Postgres that is down, then back."""

    def __init__(self) -> None:
        self.port = free_port()
        self._listener: socket.socket | None = None

    def url(self, database_url: str) -> str:
        """The database URL with this port in place of the machine's Postgres."""
        machine = urlsplit(BASE_DB.replace("+asyncpg", "")).netloc
        return database_url.replace(machine, f"postgres@127.0.0.1:{self.port}")

    def open(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()

    def _accept(self) -> None:
        target = urlsplit(BASE_DB.replace("+asyncpg", ""))
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection((target.hostname, target.port or 5432))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)


def _stops_once_postgres_is_back(hostq_cmd, env: dict, argv: tuple) -> tuple[str, int, list[str]]:
    """Start the command with Postgres not yet reachable, let it through, wait for the command to end: its first
    line, its exit status and its other lines."""
    down = _Forwarder()
    env = {**os.environ, **env, "DATABASE_URL": down.url(env["DATABASE_URL"])}
    argv = tuple(arg or str(free_port()) for arg in argv)  # "": a free port
    child = subprocess.Popen([*hostq_cmd, *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    try:
        first = child.stderr.readline().strip()
        assert child.poll() is None, first
        down.open()
        status = child.wait(timeout=30)
        return first, status, child.stderr.read().strip().splitlines()
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        down.close()


@pytest.mark.parametrize("argv", [("worker", "--region", "us"), ("api", "--port", ""),
                                  ("api", "--port", "", "--workers", "2")])
async def test_a_wrong_kek_found_once_postgres_is_back_stops_the_process(hostq_cmd, test_env, tenant, argv):
    """Started while Postgres is down, a worker or the API cannot check HOSTQ_KEK; before, the check was skipped,
    and a worker with a wrong key failed every job it then took (`kek_mismatch`). Now the worker waits for
    Postgres before it starts and the API checks once it answers: either stops with the line of a refusal at
    start, and exit 2."""
    wrong = {**test_env, "HOSTQ_KEK": base64.b64encode(os.urandom(32)).decode()}
    first, status, rest = _stops_once_postgres_is_back(hostq_cmd, wrong, argv)
    assert first.startswith("hostq: warning: Postgres cannot be reached ("), first
    assert status == 2, rest
    assert any(line.startswith("hostq: configuration error: HOSTQ_KEK opens none of the ") for line in rest), rest
    assert not any("Traceback" in line for line in rest), rest


def test_a_worker_started_while_postgres_is_down_starts_once_it_answers(hostq_cmd, test_env, settings):
    down = _Forwarder()
    env = {**os.environ, **test_env, "DATABASE_URL": down.url(test_env["DATABASE_URL"])}
    worker = subprocess.Popen([*hostq_cmd, "worker", "--region", "us"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        first = worker.stderr.readline().strip()
        down.open()
        lines = []  # then any warning of the checks, the line below, and Dramatiq's lines until it consumes
        while not (lines and lines[-1].endswith("Worker process is ready for action.")) and len(lines) < 30:
            lines.append(worker.stderr.readline().strip())
        assert worker.poll() is None
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        status = worker.wait(timeout=30)
        down.close()
    assert first.endswith("waiting for it before starting (check DATABASE_URL if it is not just down)"), first
    assert "hostq: Postgres answers: starting" in lines, lines
    assert status == 0


def test_db_upgrade_prints_what_it_did_as_one_json_object(hostq_cmd, test_env, scratch_db):
    env = {**test_env, "DATABASE_URL": scratch_db}
    first, again = (_hostq(hostq_cmd, env, "db", "upgrade") for _ in range(2))
    name = scratch_db.rsplit("/", 1)[1]
    newest = json.loads(first.stdout)["revision"]
    assert json.loads(first.stdout) == {"database": name, "created": True, "revision_before": None,
                                        "revision": newest}, first
    assert json.loads(again.stdout) == {"database": name, "created": False, "revision_before": newest,
                                        "revision": newest}, again
    assert newest == sorted(p.name[:4] for p in (Path(__file__).parents[2] / "migrations" / "versions")
                            .glob("[0-9]*.py"))[-1]

    # A newer release migrated it, and this one is rolled back to: one warning line, nothing done, exit 0 (a
    # compose file's migrate step must not keep the rolled-back stack down with a traceback).
    async def migrated_by_a_newer_release():
        conn = await connect(scratch_db)
        try:
            await conn.execute("UPDATE alembic_version SET version_num = '9999'")
        finally:
            await conn.close()

    asyncio.run(migrated_by_a_newer_release())
    ahead = _hostq(hostq_cmd, env, "db", "upgrade")
    assert ahead.returncode == 0 and json.loads(ahead.stdout) == {
        "database": name, "created": False, "revision_before": "9999", "revision": "9999", "ahead": True}, ahead
    assert ahead.stderr.strip() == ("hostq: warning: the database is at migration 9999, which this hostq does not "
                                    "have: a newer release migrated it; nothing to do (this release's processes "
                                    "run on it)"), ahead.stderr


async def test_database_url_options_reach_every_connection_path(test_env, settings):  # settings: the run database
    """sslmode=require against this machine's Postgres (no TLS) must fail the same way on each path hostq connects
    by: the ORM's engine, the plain pools, migrations. Before, SQLAlchemy's path took no libpq option at all."""
    from sqlalchemy import text

    from domain.db import make_engine
    from domain.migrate import check_schema
    from domain.pg import LazyPool
    url = f"{test_env['DATABASE_URL']}?sslmode=require"
    engine = make_engine(url, pool_size=1)
    try:
        with pytest.raises(Exception, match="rejected SSL upgrade"):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    pool = LazyPool(url, max_size=1, scope="system")
    try:
        with pytest.raises(Exception, match="rejected SSL upgrade"):
            await (await pool.get()).fetchval("SELECT 1")  # the pool opens its connections on first use
    finally:
        await pool.close()
    assert "rejected SSL upgrade" in await asyncio.to_thread(check_schema, url)
    plain = f"{test_env['DATABASE_URL']}?sslmode=disable"  # and an option that works, works everywhere
    assert await asyncio.to_thread(check_schema, plain) is None


async def test_a_server_token_can_come_from_stdin_and_stays_out_of_the_process_list(hostq_cmd, test_env, settings,
                                                                                    sessions):
    """`--token -` reads the token's line from stdin (as `docker login --password-stdin`): stored as given."""
    from domain.provisioning.models import WhmServer
    from domain.provisioning.service import server_token
    region = f"stdin-{uuid.uuid4().hex[:6]}"
    added = _hostq(hostq_cmd, test_env, "servers", "add", "--region", region, "--url",
                   f"https://whm-{region}.example:2087", "--username", "root", "--token", "-", input="from-stdin-1\n")
    assert added.returncode == 0, added.stderr
    server_id = json.loads(added.stdout)["server_id"]
    updated = _hostq(hostq_cmd, test_env, "servers", "update", "--server", server_id, "--token", "-",
                     input="from-stdin-2\nnot this line\n")
    assert updated.returncode == 0, updated.stderr
    async with sessions() as session:
        server = await session.get(WhmServer, uuid.UUID(server_id))
    assert server_token(settings.require_kek(), server) == "from-stdin-2"
    empty = _hostq(hostq_cmd, test_env, "servers", "update", "--server", server_id, "--token", "-", input="\n")
    assert "--token -: no token on stdin" in _one_line(empty)
    async with sessions() as session:
        assert server_token(settings.require_kek(), await session.get(WhmServer, uuid.UUID(server_id))) == \
            "from-stdin-2"


def test_production_refuses_a_whm_reached_over_plain_http_from_another_machine(hostq_cmd, test_env, settings):
    production = {**test_env, "HOSTQ_ENV": "production", "HOSTQ_PSP_WEBHOOK_SECRET": "a-real-secret-0123456789"}
    region = f"plain-{uuid.uuid4().hex[:6]}"
    refused = _hostq(hostq_cmd, production, "servers", "add", "--region", region, "--url",
                     f"http://whm-{region}.example:2086", "--username", "root", "--token", "t")
    assert "is plain http" in _one_line(refused)
    added = _hostq(hostq_cmd, production, "servers", "add", "--region", region, "--url",
                   f"https://whm-{region}.example:2087", "--username", "root", "--token", "t")
    assert added.returncode == 0, added.stderr
    moved = _hostq(hostq_cmd, production, "servers", "update", "--server", json.loads(added.stdout)["server_id"],
                   "--url", f"http://whm-{region}.example:2086")
    assert "is plain http" in _one_line(moved)


@pytest.mark.parametrize("argv, said", [
    (["--regions", ""], "argument --regions: each region must be"),
    (["--regions", "us,us"], "region 'us' is given more than once"),
    (["--whm-port", "65535", "--regions", "us,eu"], "leaves no port for the fake WHM of region eu"),
])
def test_hostq_dev_refuses_bad_regions_before_it_starts_anything(hostq_cmd, test_env, argv, said):
    """`--regions ""` used to disable the fake servers of earlier runs, start processes, and end in a traceback."""
    done = _hostq(hostq_cmd, {**test_env, "DATABASE_URL": f"{BASE_DB}/hostq_test_{RUN}_never_made"},
                  "dev", "--port", str(free_port()), *argv)
    assert done.returncode in (1, 2) and "Traceback" not in done.stderr, done.stderr
    assert done.stdout == "" and said in done.stderr.strip().splitlines()[-1], done.stderr  # after argparse's usage


def test_an_api_started_while_postgres_is_down_stops_if_its_database_does_not_exist_once_it_answers(hostq_cmd,
                                                                                                 test_env):
    missing = {**test_env, "DATABASE_URL": f"{BASE_DB}/hostq_test_{RUN}_never_made"}
    _, status, rest = _stops_once_postgres_is_back(hostq_cmd, missing, ("api", "--port", ""))
    assert status == 1, rest
    assert rest == [f'hostq: database "hostq_test_{RUN}_never_made" does not exist: check DATABASE_URL, or create and '
                    "migrate it with `hostq db upgrade`: stopping"], rest
