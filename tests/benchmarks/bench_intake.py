"""Order intake under load: hostq's `POST /v1/services` against a one-INSERT-one-LPUSH baseline, same run.

    .venv/bin/python tests/benchmarks/bench_intake.py [--seconds 10] [--warmup 2] [--concurrency 64] [--json F]

Prints a table and, as the last stdout line, the results as JSON. See README.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from hostq.client import HostqSigner  # noqa: E402
from tests.benchmarks.stack import Stack, finish, free_port, hostq_command, run_in_stack  # noqa: E402

LOADGEN = Path(__file__).with_name("loadgen.py")
REGION = "us"


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per target")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each measurement")
    parser.add_argument("--concurrency", type=int, default=64, help="keep-alive connections")
    parser.add_argument("--json", type=Path, help="also write the JSON results to this file")
    return parser.parse_args()


def provision_tenant(stack: Stack) -> dict:
    """Migrate the fresh database, create the tenant and a server with the CLI; the tenant's credentials."""
    stack.hostq("db", "upgrade")
    creds = stack.hostq("tenants", "create", "--name", "Bench", "--rate-limit", "1000000")
    stack.hostq("servers", "add", "--region", REGION, "--url", "http://127.0.0.1:2999", "--username", "root",
                "--token", "sandbox", "--capacity", "1000000")
    return creds


def start_servers(stack: Stack) -> dict[str, int]:
    """Start `hostq api` and the baseline app (one uvicorn process each); wait until both answer."""
    ports = {"hostq": free_port(), "baseline": free_port()}
    stack.start("hostq", [*hostq_command(), "api", "--port", str(ports["hostq"])])
    stack.start("baseline", [sys.executable, "-m", "uvicorn", "tests.benchmarks.baseline_app:app", "--host",
                             "127.0.0.1", "--port", str(ports["baseline"]), "--log-level", "warning",
                             "--no-server-header"],
                env={"BENCH_DATABASE_URL": stack.plain_database_url,
                     "BENCH_REDIS_KEY": f"{stack.namespace}:baseline:orders"})
    stack.wait_ready("hostq", f"http://127.0.0.1:{ports['hostq']}/health/ready")
    stack.wait_ready("baseline", f"http://127.0.0.1:{ports['baseline']}/health/live")
    return ports


def seed_catalog(port: int, creds: dict) -> str:
    """Create one customer and the `basic` plan through the signed API; the customer's id."""
    auth = HostqSigner(creds["api_key"], creds["signing_secret"])
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=auth, timeout=10) as api:
        customer = api.post("/v1/customers", json={"name": "Bench Customer", "email": "bench@example.com"})
        customer.raise_for_status()
        plan = api.post("/v1/plans", json={"code": "basic", "name": "Basic", "whm_package": "basic",
                                           "prices": {"monthly": 6990}})
        plan.raise_for_status()
    return customer.json()["id"]


def load(config: dict) -> dict:
    """Run the load generator in its own process against one target; its result."""
    done = subprocess.run([sys.executable, str(LOADGEN), json.dumps(config)], capture_output=True, text=True,
                          timeout=config["warmup"] + config["seconds"] + 120)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed on {config['name']}:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def targets(stack: Stack, ports: dict[str, int], creds: dict, customer_id: str, args) -> list[dict]:
    """The three loads, measured one after the other: baseline, hostq, and a trivial GET (loader ceiling)."""
    common = {"seconds": args.seconds, "warmup": args.warmup, "concurrency": args.concurrency,
              "database": stack.database}
    signed = {"api_key": creds["api_key"], "signing_secret": creds["signing_secret"], "customer_id": customer_id,
              "region": REGION}
    pids = {name: process.pid for name, process in stack.processes.items()}
    return [
        {"name": "baseline", "port": ports["baseline"], "path": "/orders", "kind": "order", "tag": "base",
         "server_pid": pids["baseline"], **signed, **common},
        {"name": "hostq", "port": ports["hostq"], "path": "/v1/services", "kind": "order", "tag": "hq",
         "server_pid": pids["hostq"], **signed, **common},
        {"name": "ceiling", "port": ports["baseline"], "path": "/health/live", "kind": "get",
         "server_pid": pids["baseline"], **common},
    ]


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, rounded; None when undefined."""
    return round(numerator / denominator, 3) if denominator else None


def ratios(results: dict[str, dict]) -> dict[str, float | None]:
    """hostq relative to the baseline (and the baseline relative to the loader's ceiling)."""
    hostq, base, ceiling = results["hostq"], results["baseline"], results["ceiling"]
    return {"throughput_hostq_over_baseline": ratio(hostq["rps"], base["rps"]),
            "p99_hostq_over_baseline": ratio(hostq["p99_ms"], base["p99_ms"]),
            "p50_hostq_over_baseline": ratio(hostq["p50_ms"], base["p50_ms"]),
            "throughput_baseline_over_ceiling": ratio(base["rps"], ceiling["rps"])}


LABELS = {"baseline": "baseline POST /orders", "hostq": "hostq POST /v1/services",
          "ceiling": "ceiling GET /health/live"}


def print_table(results: dict[str, dict], rates: dict) -> None:
    """The human-readable report."""
    print(f"\n{'target':<26}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}   "
          f"{'CPU % (loader/server/postgres/redis)':<38}{'req/s 1st s -> last s'}")
    for name, r in results.items():
        cpu = r["cpu_percent"]
        cpus = f"{cpu['loader']:.0f} / {cpu['server']:.0f} / {cpu['postgres']:.0f} / {cpu['redis']:.0f}"
        trend = f"{r['per_second'][0]} -> {r['per_second'][-1]}" if r["per_second"] else "-"
        print(f"{LABELS[name]:<26}{r['rps']:>9.0f}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['errors']:>8}   "
              f"{cpus:<38}{trend}")
    print(f"\nhostq / baseline: throughput x{rates['throughput_hostq_over_baseline']}, "
          f"p50 x{rates['p50_hostq_over_baseline']}, p99 x{rates['p99_hostq_over_baseline']}  "
          f"(baseline reaches {rates['throughput_baseline_over_ceiling']} of the loader ceiling)")
    for name, r in results.items():
        for sample in r["error_samples"]:
            print(f"  {name} error: {sample}")


def run(stack: Stack, args) -> dict[str, dict]:
    """Set everything up, then load each target in turn."""
    print(f"database {stack.database}, namespace {stack.namespace}, logs {stack.logs}", file=sys.stderr)
    creds = provision_tenant(stack)
    ports = start_servers(stack)
    customer_id = seed_catalog(ports["hostq"], creds)
    results = {}
    for config in targets(stack, ports, creds, customer_id, args):
        print(f"loading {config['name']} for {args.warmup:g} + {args.seconds:g} s ...", file=sys.stderr)
        results[config["name"]] = load(config)
    return results


def main() -> None:
    """Run the benchmark; always stop the processes and remove the database and Redis keys."""
    args = parse_args()
    stack, results = run_in_stack(lambda stack: run(stack, args))
    rates = ratios(results)
    print_table(results, rates)
    finish(stack, results, {"results": results, "ratios": rates}, args.json)


if __name__ == "__main__":
    main()
