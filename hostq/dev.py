"""`hostq dev`: the whole of hostq on one machine, with the fake WHM, PSP and mail server and a demo tenant."""

from __future__ import annotations

import asyncio
import json
import base64
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from domain.errors import Conflict
from domain.migrate import upgrade
from domain.pg import connect
from domain.settings import DEV_KEK_FILE, load_settings
from hostq.stopping import SUPERVISOR_ENV

#: Postgres connections left free for operator commands, migrations and psql while `hostq dev` runs.
SPARE_CONNECTIONS = 5
#: The smallest API pool `hostq dev` gives, whatever is left (with a warning when that is too little).
MIN_API_POOL = 10


def _api_pool(settings, workers: int) -> int | None:
    """HOSTQ_API_DB_POOL for this run's API: what Postgres's `max_connections` leaves once the workers, the
    scheduler, the API's ORM engine and a spare few have their most, capped at the setting's default (None:
    the environment sets it, and wins). The default of 50 is sized for an API on a database of its own; here
    every process shares one Postgres, and a burst must not run it out of connections."""
    if os.environ.get("HOSTQ_API_DB_POOL"):
        return None
    from api.resources import ORM_OVERFLOW, ORM_POOL
    from schedules.clock import PROCESS_CONNECTIONS as SCHEDULER
    from workers.runtime import PROCESS_CONNECTIONS as WORKER

    async def limits() -> tuple[int, int]:
        conn = await connect(settings.database_url)
        try:
            return (int(await conn.fetchval("SHOW max_connections")),
                    int(await conn.fetchval("SHOW superuser_reserved_connections")))
        finally:
            await conn.close()

    allowed, reserved = asyncio.run(limits())
    others = workers * WORKER + SCHEDULER + ORM_POOL + ORM_OVERFLOW
    left = allowed - reserved - SPARE_CONNECTIONS - others
    if left < MIN_API_POOL:
        print(f"hostq: Postgres allows {allowed - reserved} connections and this run's processes may open up to "
              f"{others + MIN_API_POOL}: raise max_connections or start fewer regions", file=sys.stderr)
    return max(MIN_API_POOL, min(settings.api_db_pool, left))


#: Where `hostq dev`'s fake WHMs keep their accounts, in the directory it runs in.
SANDBOX_STATE_DIR = DEV_KEK_FILE.parent / "sandbox"


def _dev_kek() -> str:
    """HOSTQ_KEK from the environment, else a development key kept in .hostq/dev-kek (so secrets stay readable)."""
    if os.environ.get("HOSTQ_KEK"):
        return os.environ["HOSTQ_KEK"]
    path = DEV_KEK_FILE
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        path.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
        path.chmod(0o600)
    return path.read_text().strip()


def _kek_source() -> str:
    """Where this run's HOSTQ_KEK comes from, as other commands beside it can be given the same."""
    path = DEV_KEK_FILE
    if path.is_file() and path.read_text().strip() == os.environ.get("HOSTQ_KEK"):
        return str(path.resolve())
    return "the HOSTQ_KEK of this environment"


def _warn_foreign_secrets(settings) -> None:
    from hostq.admin import sealed_elsewhere
    foreign = asyncio.run(sealed_elsewhere(settings))
    if foreign["keys"] or foreign["servers"]:
        print(f"hostq: {foreign['keys']} API key(s) and {foreign['servers']} WHM server(s) in this database were "
              f"sealed with another HOSTQ_KEK than {_kek_source()} (an earlier hostq dev started from another "
              "directory?): they will not work. Start hostq dev where you first did, set HOSTQ_KEK to that key, or "
              "drop the database to start afresh", file=sys.stderr)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up within {timeout:.0f} s")


def _demo_credentials(settings) -> dict:
    from hostq.admin import create_key, create_tenant
    from domain.tenants.scopes import ALL_SCOPES
    try:
        return asyncio.run(create_tenant(settings, name="Demo Hosting", slug="demo",
                                         sender="Demo Hosting <billing@demo.example>", support_email="help@demo.example",
                                         rate_limit=600))
    except Conflict:  # a previous run made it: issue a fresh key
        return {"slug": "demo", **asyncio.run(create_key(settings, tenant_slug="demo", scopes=",".join(ALL_SCOPES)))}


def _hostq_command() -> str:
    """How to run this hostq from a shell, wherever `hostq dev` was started: the script beside this Python, or
    the module."""
    script = Path(sys.executable).with_name("hostq")
    return shlex.quote(str(script)) if script.exists() else f"{shlex.quote(sys.executable)} -m hostq"


def _banner(creds: dict, port: int, whm_ports: dict[str, int], psp_port: int, mail_port: int) -> str:
    base = f"http://127.0.0.1:{port}"
    hostq = _hostq_command()
    fakes = "\n".join(f"  fake WHM     region {region}: http://127.0.0.1:{p}   (accounts: http://127.0.0.1:{p}/__sandbox/accounts)"
                      for region, p in whm_ports.items())
    psp = f"http://127.0.0.1:{psp_port}"
    fakes += f"\n  fake PSP     {psp}   (API Pix; charges: {psp}/__sandbox/charges; webhooks: {psp}/__sandbox/webhooks)"
    mail = f"http://127.0.0.1:{mail_port}/__sandbox/messages"
    fakes += f"\n  fake mail    {os.environ['HOSTQ_SMTP_URL']}   (messages: {mail})"
    return f"""
hostq is running.
  API          {base}   (OpenAPI: {base}/schema/openapi.json)
{fakes}

Demo tenant credentials (shown once):
  {json.dumps(creds)}

Try a signed request (in another terminal, from this directory):
  export HOSTQ_API_URL={base} HOSTQ_API_KEY={creds['api_key']} HOSTQ_SIGNING_SECRET={creds['signing_secret']}
  {hostq} call POST /v1/customers --data '{{"name": "Ana", "email": "ana@example.com"}}'
  {hostq} call POST /v1/plans --data '{{"code": "basic", "name": "Basic", "whm_package": "basic", "prices": {{"monthly": 6990}}}}'
  {hostq} call POST /v1/services --data '{{"customer_id": "<id>", "plan": "basic", "domain": "ana.example.com", "region": "{next(iter(whm_ports))}", "billing_cycle": "monthly", "provision": "now"}}'
  {hostq} call GET /v1/jobs/<job id>
  (On a database an earlier run used, the plan and the domain may exist already: a 409 says so; skip the plan,
  pick another domain.)

Operator commands (hostq jobs, servers, tenants, keys, worker) run from this directory use the same
development key ({_kek_source()}); give them the DATABASE_URL, REDIS_URL and HOSTQ_BROKER_URL of this run
if you set any.

A process that exits (a worker killed with kill -9, say) is started again; Ctrl-C stops everything.
"""


def _pix_webhook_url(api_port: int) -> str:
    return f"http://127.0.0.1:{api_port}/v1/webhooks/pix/sandbox"


def _signal_group(child: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(child.pid, sig)
    except ProcessLookupError:
        pass


#: How long `hostq dev` waits for hostq's own processes to stop (workers finish their messages), then for the
#: fakes, before it kills what is left.
STOP_GRACE_S, FAKES_STOP_GRACE_S = 20.0, 5.0


def _stop(children: list[subprocess.Popen], grace_s: float) -> None:
    """SIGTERM every child's process group, wait, then SIGKILL what is left of each group."""
    for child in children:
        _signal_group(child, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _signal_group(child, signal.SIGKILL)  # also reaps forked workers whose parent already exited


def _stop_all(children: list[_Child]) -> None:
    """Stop hostq's processes first, then the fakes: a worker finishing its messages on SIGTERM still has the fake
    WHM to answer its calls."""
    _stop([child.proc for child in children if not child.fake], STOP_GRACE_S)
    _stop([child.proc for child in children if child.fake], FAKES_STOP_GRACE_S)


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


#: A child that exits this many times within RESTART_WINDOW_S is not restarted again: `hostq dev` stops. A child
#: killed with SIGKILL (`kill -9` in a crash test, or the OOM killer) is not crash-looping: it is always started
#: again, however often.
RESTART_LIMIT, RESTART_WINDOW_S = 5, 60.0


class _Child:
    """One supervised process of `hostq dev` (in its own process group: a worker forks, and stopping it must
    reach all of its processes)."""

    def __init__(self, name: str, argv: list[str], *, fake: bool = False) -> None:
        self.name, self.argv, self.fake = name, argv, fake
        self.exits: list[float] = []
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "hostq", *self.argv],
                                env={**os.environ, SUPERVISOR_ENV: str(os.getpid())}, start_new_session=True)

    def restart_if_exited(self) -> bool:
        """Start the process again if it exited (False once it has exited too often to go on)."""
        code = self.proc.poll()
        if code is None:
            return True
        now = time.monotonic()
        self.exits = [t for t in self.exits if now - t < RESTART_WINDOW_S]
        if code != -signal.SIGKILL:
            self.exits.append(now)
        if len(self.exits) >= RESTART_LIMIT:
            print(f"hostq: {self.name} exited {len(self.exits)} times within {RESTART_WINDOW_S:.0f} s "
                  f"(last code {code}); stopping everything", file=sys.stderr)
            return False
        _signal_group(self.proc, signal.SIGKILL)  # what it forked and left behind
        print(f"hostq: {self.name} exited (code {code}); starting it again", file=sys.stderr, flush=True)
        self.proc = self._spawn()
        return True


def _start_fakes(args, settings, whm_ports: dict[str, int], children: list[_Child]) -> list[str]:
    """Start a fake WHM per region (registered as that region's server), the fake PSP and the fake mail server;
    answer the regions whose fakes of earlier runs were disabled."""
    from hostq.admin import register_sandboxes
    retired, server_ids = asyncio.run(register_sandboxes(settings, {region: f"http://127.0.0.1:{port}"
                                                                    for region, port in whm_ports.items()}))
    SANDBOX_STATE_DIR.mkdir(parents=True, exist_ok=True)
    for region, port in whm_ports.items():  # one fake WHM per region, as real regions have their own servers
        # Its accounts are kept per registered server: a restarted fake (or `hostq dev`) still has them, and a
        # new database (a new server row) starts with an empty fake, as its services are none.
        state = SANDBOX_STATE_DIR.resolve() / f"whm-{server_ids[region]}.json"
        children.append(_Child(f"the fake WHM of region {region}",
                               ["sandbox", "whm", "--port", str(port), "--state", str(state)], fake=True))
        _wait_http(f"http://127.0.0.1:{port}/__sandbox/accounts")
    children.append(_Child("the fake PSP", ["sandbox", "psp", "--port", str(args.psp_port),
                                            "--webhook-url", _pix_webhook_url(args.port),
                                            "--state", str(SANDBOX_STATE_DIR.resolve() / "psp.json")], fake=True))
    _wait_http(f"http://127.0.0.1:{args.psp_port}/__sandbox/charges")
    children.append(_Child("the fake mail server", ["sandbox", "mail", "--smtp-port", str(args.smtp_port),
                                                    "--port", str(args.mail_port)], fake=True))
    _wait_http(f"http://127.0.0.1:{args.mail_port}/__sandbox/messages")
    return retired


def _whm_ports(args, regions: list[str]) -> dict[str, int]:
    """Each region's fake WHM port (--whm-port, then the next ones); ValueError when one is out of range or two of
    the run's ports are the same."""
    if args.whm_port + len(regions) - 1 > 65535:
        raise ValueError(f"--whm-port {args.whm_port} leaves no port for the fake WHM of region {regions[-1]}: each "
                         f"region takes the next port, so use {65536 - len(regions)} or lower")
    whm_ports = {region: args.whm_port + n for n, region in enumerate(regions)}
    named = [("the API (--port)", args.port),
             *((f"the fake WHM of region {region} (--whm-port{f' + {n}' if n else ''})", whm_ports[region])
               for n, region in enumerate(regions)),
             ("the fake PSP (--psp-port)", args.psp_port), ("the fake mail server's SMTP (--smtp-port)", args.smtp_port),
             ("the fake mail server's HTTP (--mail-port)", args.mail_port)]
    taken: dict[int, str] = {}
    for what, port in named:
        if port in taken:
            raise ValueError(f"{taken[port]} and {what} would both use port {port}: give each its own (the fake WHMs "
                             "take --whm-port and the ports after it, one per region)")
        taken[port] = what
    return whm_ports


def run_dev(args) -> int:
    """Migrate, start the fakes, register the fake WHMs, start API, workers and scheduler, print credentials;
    then keep them running: a process that exits (a worker killed with `kill -9`, say) is started again, and
    the others (the fake WHM and its accounts among them) go on. The exit status: 0 when stopped by a signal
    (SIGINT, SIGTERM, or SIGHUP: a closed terminal), 1 when a process kept exiting."""
    regions = args.regions  # argtypes.regions: one or more, each once
    whm_ports = _whm_ports(args, regions)
    os.environ["HOSTQ_KEK"] = _dev_kek()
    settings = load_settings()
    # The API and workers talk to this run's fakes, whatever HOSTQ_PSP_URL and HOSTQ_SMTP_URL said.
    os.environ["HOSTQ_PSP_URL"] = f"http://127.0.0.1:{args.psp_port}"
    os.environ["HOSTQ_SMTP_URL"] = f"smtp://127.0.0.1:{args.smtp_port}"
    for port in (args.port, *whm_ports.values(), args.psp_port, args.smtp_port, args.mail_port):
        if not _port_free(port):
            raise RuntimeError(f"port {port} is already in use: stop what uses it or pass --port, --whm-port, "
                               "--psp-port, --smtp-port or --mail-port")
    upgrade(settings.database_url)
    children: list[_Child] = []
    for signum in (signal.SIGTERM, signal.SIGHUP):  # before any child starts: none is left behind unstopped
        signal.signal(signum, _interrupt)
    try:
        retired = _start_fakes(args, settings, whm_ports, children)
        if retired:
            print(f"hostq: disabled fake WHM servers of earlier runs in region(s) {', '.join(retired)}", file=sys.stderr)
        _warn_foreign_secrets(settings)
        if (pool := _api_pool(settings, workers=1 + len(regions))) is not None:
            os.environ["HOSTQ_API_DB_POOL"] = str(pool)
        children.append(_Child("the API", ["api", "--port", str(args.port)]))
        children.append(_Child("the general worker", ["worker"]))
        for region in regions:
            children.append(_Child(f"the worker of region {region}", ["worker", "--region", region]))
        children.append(_Child("the scheduler", ["scheduler"]))
        _wait_http(f"http://127.0.0.1:{args.port}/health/ready")
        print(_banner(_demo_credentials(settings), args.port, whm_ports, args.psp_port, args.mail_port),
              flush=True)
        while all(child.restart_if_exited() for child in children):
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # a second signal must not cut it short
            signal.signal(signum, signal.SIG_IGN)
        _stop_all(children)
