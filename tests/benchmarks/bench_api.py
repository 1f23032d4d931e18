"""The signed API under load: hostq's `POST /v1/customers` and `GET /v1/jobs/{id}` against minimal baselines.

    .venv/bin/python tests/benchmarks/bench_api.py [--seconds 10] [--warmup 2] [--concurrency 64] [--jobs 50]
        [--json F] [--only customers|jobs] [--profile F]

Prints a table and, as the last stdout line, the results as JSON. See README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from hostq.client import HostqSigner
from tests.benchmarks.baseline_app import JOBS_TABLE, SEED_JOBS
from tests.benchmarks.bench_intake import LOADGEN, REGION, ratio, seed_catalog
from tests.benchmarks.stack import PG_BASE, ROOT, Stack, _drop, finish, free_port, hostq_command, run_in_stack

#: High enough never to refuse (~1.7 M requests/s), so the limiter's Redis script still runs on every request.
RATE_LIMIT = 1_000_000  # the most a tenant may have (domain.tenants.service.MAX_RATE_LIMIT)
#: The ratios this benchmark is judged by (hostq / baseline); printed next to the measured ones.
GOALS = {"customers": {"throughput_min": 0.5, "p99_max": 2.0}, "jobs": {"throughput_min": 0.6}}
LABELS = {"customers_baseline": "baseline POST /orders", "customers_hostq": "hostq POST /v1/customers",
          "jobs_baseline": "baseline GET /jobs/{id}", "jobs_hostq": "hostq GET /v1/jobs/{id}",
          "ceiling": "ceiling GET /health/live"}


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per target")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each measurement")
    parser.add_argument("--concurrency", type=int, default=64, help="keep-alive connections")
    parser.add_argument("--jobs", type=int, default=50, help="jobs the GET loads cycle through (and baseline rows)")
    parser.add_argument("--json", type=Path, help="also write the JSON results to this file")
    parser.add_argument("--only", choices=["customers", "jobs"], help="load only this pair (e.g. to profile it)")
    parser.add_argument("--profile", type=Path, help="run `hostq api` under a profiler, report to this file: "
                                                     "cProfile for .prof (read it with pstats), else pyinstrument "
                                                     "(.html, .pyisession, else text); hostq's figures are then "
                                                     "not comparable")
    return parser.parse_args()


def provision_tenant(stack: Stack) -> dict:
    """Migrate the fresh database, create the tenant (a limit that never refuses) and a server; its credentials."""
    stack.hostq("db", "upgrade")
    creds = stack.hostq("tenants", "create", "--name", "Bench", "--rate-limit", str(RATE_LIMIT))
    stack.hostq("servers", "add", "--region", REGION, "--url", "http://127.0.0.1:2999", "--username", "root",
                "--token", "sandbox", "--capacity", "1000000")
    return creds


def baseline_database(stack: Stack) -> str:
    """The baseline's own database, so that each server's Postgres counters and CPU are told apart."""
    return f"{stack.database}_base"


async def create_database(name: str) -> None:
    """An empty database (the baseline app creates its tables at start-up)."""
    admin = await asyncpg.connect(f"postgresql://{PG_BASE}/postgres", timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


def start_servers(stack: Stack, profile: Path | None) -> dict[str, int]:
    """Start `hostq api` (under pyinstrument with --profile) and the baseline app; wait until both answer."""
    ports = {"hostq": free_port(), "baseline": free_port()}
    hostq = [*hostq_command(), "api", "--port", str(ports["hostq"])]
    if profile and profile.suffix == ".prof":  # cProfile: exact call counts and own times (pstats)
        hostq = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "hostq", *hostq[-3:]]
    elif profile:  # uvicorn with one worker serves in this very process, so pyinstrument sees the requests
        renderer = {".html": "html", ".pyisession": "pyisession"}.get(profile.suffix, "text")
        hostq = [sys.executable, "-m", "pyinstrument", "-r", renderer, "-o", str(profile), "-m", "hostq", *hostq[-3:]]
    stack.start("hostq", hostq)
    stack.start("baseline", [sys.executable, "-m", "uvicorn", "tests.benchmarks.baseline_app:app", "--host",
                             "127.0.0.1", "--port", str(ports["baseline"]), "--log-level", "warning",
                             "--no-server-header"],
                env={"BENCH_DATABASE_URL": f"postgresql://{PG_BASE}/{baseline_database(stack)}",
                     "BENCH_REDIS_KEY": f"{stack.namespace}:baseline:orders"})
    stack.wait_ready("hostq", f"http://127.0.0.1:{ports['hostq']}/health/ready")
    stack.wait_ready("baseline", f"http://127.0.0.1:{ports['baseline']}/health/live")
    return ports


def create_jobs(port: int, creds: dict, customer_id: str, count: int) -> list[str]:
    """`count` orders provisioned "now" through the signed API (nobody runs them); their jobs' ids."""
    auth = HostqSigner(creds["api_key"], creds["signing_secret"])
    ids = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=auth, timeout=10) as api:
        for n in range(count):
            answer = api.post("/v1/services", json={"customer_id": customer_id, "plan": "basic",
                                                    "domain": f"jobs{n}.example.com", "region": REGION,
                                                    "billing_cycle": "monthly", "provision": "now"})
            answer.raise_for_status()
            ids.append(answer.json()["job"]["id"])
        # The limiter must run (and never refuse): its headers are on every answer that passed it.
        limit = api.get(f"/v1/jobs/{ids[0]}").headers.get("x-ratelimit-limit")
    if limit != str(RATE_LIMIT):
        raise RuntimeError(f"expected X-RateLimit-Limit {RATE_LIMIT}, got {limit!r}: is the limiter's Redis up?")
    return ids


async def seed_baseline_jobs(database_url: str, count: int) -> list[str]:
    """As many rows in the baseline's job table as hostq has jobs; their ids."""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(JOBS_TABLE)
        return [str(row["id"]) for row in await connection.fetch(SEED_JOBS, count)]
    finally:
        await connection.close()


async def pg_counters(database: str) -> dict[str, int]:
    """A database's cumulative connections opened and transactions ended (pg_stat_database)."""
    connection = await asyncpg.connect(f"postgresql://{PG_BASE}/postgres")
    try:
        row = await connection.fetchrow("SELECT sessions, xact_commit + xact_rollback AS xacts "
                                        "FROM pg_stat_database WHERE datname = $1", database)
        return dict(row)
    finally:
        await connection.close()


def measured_load(config: dict) -> dict:
    """One load (as bench_intake.load), plus Postgres connections opened and transactions ended per request.

    Both counters are read twice while the load runs (1 s into the measured window and 1 s before its end) and
    divided by the measured requests/s: busy backends report their counters about once a second, idle ones
    up to 10 s late. Hence the baseline's own database: loads alternate between the two, so a database's
    late reports from its previous load arrive before the next load on it is measured.
    """
    argv = [sys.executable, str(LOADGEN), json.dumps(config)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as loader:
        counters = None
        if config["seconds"] > 3:
            time.sleep(config["warmup"] + 1)
            first, started = asyncio.run(pg_counters(config["database"])), time.perf_counter()
            time.sleep(config["seconds"] - 2)
            last, ended = asyncio.run(pg_counters(config["database"])), time.perf_counter()
            counters = {name: (last[name] - first[name]) / (ended - started) for name in first}
        stdout, stderr = loader.communicate(timeout=config["warmup"] + config["seconds"] + 120)
    if loader.returncode != 0:
        raise RuntimeError(f"load generator failed on {config['name']}:\n{stderr}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["pg_per_request"] = ({name: round(per_s / result["rps"], 2) for name, per_s in counters.items()}
                                if counters and result["rps"] else {"sessions": None, "xacts": None})
    return result


def targets(stack: Stack, ports: dict[str, int], creds: dict, job_ids: dict[str, list[str]], args) -> list[dict]:
    """The loads, one after the other; both halves of a pair get the same requests (the baseline ignores the
    signature, and the Idempotency-Key), so the loader costs the same on each."""
    common = {"seconds": args.seconds, "warmup": args.warmup, "concurrency": args.concurrency,
              "database": stack.database, "api_key": creds["api_key"], "signing_secret": creds["signing_secret"]}
    pids = {name: process.pid for name, process in stack.processes.items()}
    base = {"port": ports["baseline"], "server_pid": pids["baseline"], **common,
            "database": baseline_database(stack)}
    hostq = {"port": ports["hostq"], "server_pid": pids["hostq"], **common}
    pairs = {
        "customers": [
            {"name": "customers_baseline", "path": "/orders", "kind": "customer", "tag": "base", "expect": 202,
             **base},
            {"name": "customers_hostq", "path": "/v1/customers", "kind": "customer", "tag": "hq", **hostq}],
        "jobs": [
            {"name": "jobs_baseline", "path": "/jobs/{id}", "kind": "signed_get", "ids": job_ids["baseline"],
             **base},
            {"name": "jobs_hostq", "path": "/v1/jobs/{id}", "kind": "signed_get", "ids": job_ids["hostq"],
             **hostq}],
    }
    chosen = [pairs[args.only]] if args.only else list(pairs.values())
    ceiling = {"name": "ceiling", "path": "/health/live", "kind": "get", **base}
    return [config for pair in chosen for config in pair] + [ceiling]


def ratios(results: dict[str, dict]) -> dict[str, dict]:
    """hostq relative to its baseline, per pair (and each baseline relative to the loader's ceiling)."""
    out = {}
    for pair in ("customers", "jobs"):
        hostq, base = results.get(f"{pair}_hostq"), results.get(f"{pair}_baseline")
        if hostq is None or base is None:
            continue
        out[pair] = {"throughput_hostq_over_baseline": ratio(hostq["rps"], base["rps"]),
                     "p50_hostq_over_baseline": ratio(hostq["p50_ms"], base["p50_ms"]),
                     "p99_hostq_over_baseline": ratio(hostq["p99_ms"], base["p99_ms"]),
                     "throughput_baseline_over_ceiling": ratio(base["rps"], results["ceiling"]["rps"])}
    return out


def verdicts(rates: dict[str, dict]) -> dict[str, dict[str, bool | None]]:
    """Whether each measured ratio meets its goal (information, not a pass/fail exit code)."""
    out: dict[str, dict[str, bool | None]] = {}
    for pair, r in rates.items():
        goal, throughput, p99 = GOALS[pair], r["throughput_hostq_over_baseline"], r["p99_hostq_over_baseline"]
        out[pair] = {"throughput": None if throughput is None else throughput >= goal["throughput_min"]}
        if "p99_max" in goal:
            out[pair]["p99"] = None if p99 is None else p99 <= goal["p99_max"]
    return out


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _met(value: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "n/a"}[value]


def print_table(results: dict[str, dict], rates: dict, met: dict) -> None:
    """The human-readable report."""
    print(f"\n{'target':<28}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}   "
          f"{'CPU % (loader/server/postgres/redis)':<38}{'PG conn/req':>12}{'PG xact/req':>12}   "
          f"{'req/s 1st s -> last s'}")
    for name, r in results.items():
        cpu = r["cpu_percent"]
        cpus = f"{cpu['loader']:.0f} / {cpu['server']:.0f} / {cpu['postgres']:.0f} / {cpu['redis']:.0f}"
        trend = f"{r['per_second'][0]} -> {r['per_second'][-1]}" if r["per_second"] else "-"
        pg = r["pg_per_request"]
        print(f"{LABELS[name]:<28}{r['rps']:>9.0f}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['errors']:>8}   "
              f"{cpus:<38}{_num(pg['sessions']):>12}{_num(pg['xacts']):>12}   {trend}")
    print()
    for pair, r in rates.items():
        goal = GOALS[pair]
        line = (f"{pair:<10} hostq / baseline: throughput x{r['throughput_hostq_over_baseline']} "
                f"(goal >= {goal['throughput_min']}: {_met(met[pair]['throughput'])}), "
                f"p50 x{r['p50_hostq_over_baseline']}, p99 x{r['p99_hostq_over_baseline']}")
        if "p99_max" in goal:
            line += f" (goal <= {goal['p99_max']}: {_met(met[pair]['p99'])})"
        print(line + f"; baseline at {r['throughput_baseline_over_ceiling']} of the loader ceiling")
    for name, r in results.items():
        for sample in r["error_samples"]:
            print(f"  {name} error: {sample}")


def run(stack: Stack, args) -> dict[str, dict]:
    """Set everything up, then load each target in turn."""
    print(f"database {stack.database}, namespace {stack.namespace}, logs {stack.logs}", file=sys.stderr)
    creds = provision_tenant(stack)
    asyncio.run(create_database(baseline_database(stack)))
    ports = start_servers(stack, args.profile)
    customer_id = seed_catalog(ports["hostq"], creds)
    job_ids = {"hostq": create_jobs(ports["hostq"], creds, customer_id, args.jobs),
               "baseline": asyncio.run(seed_baseline_jobs(f"postgresql://{PG_BASE}/{baseline_database(stack)}",
                                                          args.jobs))}
    results = {}
    for config in targets(stack, ports, creds, job_ids, args):
        print(f"loading {config['name']} for {args.warmup:g} + {args.seconds:g} s ...", file=sys.stderr)
        results[config["name"]] = measured_load(config)
    if args.profile:  # pyinstrument writes its report on SIGINT (SIGTERM would kill it before that)
        stack.processes["hostq"].send_signal(signal.SIGINT)
        stack.processes["hostq"].wait(timeout=120)
    return results


def code_version() -> str:
    """The commit measured (`+dirty` when the work tree differs): the code changes under a running benchmark."""
    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def _drop_baseline(stack: Stack) -> None:
    try:
        asyncio.run(_drop(baseline_database(stack)))
    except (OSError, asyncpg.PostgresError) as exc:  # say what is left behind
        print(f"cleanup: dropping {baseline_database(stack)} failed: {exc!r}", file=sys.stderr)


def main() -> None:
    """Run the benchmark; always stop the processes and remove the databases and Redis keys."""
    args = parse_args()
    version = code_version()
    stack, results = run_in_stack(lambda stack: run(stack, args), cleanup=_drop_baseline)
    rates = ratios(results)
    met = verdicts(rates)
    print(f"\nhostq at {version}")
    print_table(results, rates, met)
    if args.profile:
        print(f"  hostq ran under pyinstrument (figures not comparable); profile in {args.profile}")
    finish(stack, results, {"results": results, "ratios": rates, "goals": GOALS, "goals_met": met,
                            "version": version, "profiled": bool(args.profile)}, args.json)


if __name__ == "__main__":
    main()
