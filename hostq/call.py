"""`hostq call METHOD PATH [--data JSON]`: a signed request, for demos and scripts."""

from __future__ import annotations

import json
import os
import sys

import httpx

from hostq.client import HostqSigner


def call(args) -> int:
    """Send the request; print the status line to stderr and the body to stdout; exit 0 on 2xx."""
    missing = [n for n in ("HOSTQ_API_KEY", "HOSTQ_SIGNING_SECRET") if not os.environ.get(n)]
    if missing:
        print(f"hostq: set {' and '.join(missing)} (printed by `hostq dev` or `hostq tenants create`)",
              file=sys.stderr)
        return 2
    base = os.environ.get("HOSTQ_API_URL", "http://127.0.0.1:8000")
    signer = HostqSigner(os.environ["HOSTQ_API_KEY"], os.environ["HOSTQ_SIGNING_SECRET"])
    try:
        content = json.dumps(json.loads(args.data)).encode() if args.data else b""
    except json.JSONDecodeError as exc:
        print(f"hostq: --data is not JSON: {exc}", file=sys.stderr)
        return 2
    headers = {"Content-Type": "application/json"} if content else {}
    with httpx.Client(base_url=base, auth=signer, timeout=30) as client:
        response = client.request(args.method.upper(), args.path, content=content, headers=headers)
    print(f"HTTP {response.status_code}", file=sys.stderr)
    print(response.text)
    return 0 if response.is_success else 1
