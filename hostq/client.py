"""A signing client for the hostq API: an httpx Auth that signs every request (api-v1.md)."""

from __future__ import annotations

import time
from collections.abc import Generator

import httpx

from domain.tenants.signing import signature_header


class HostqSigner(httpx.Auth):
    """Adds Authorization, X-Timestamp and X-Signature to each request."""

    requires_request_body = True

    def __init__(self, api_key: str, signing_secret: str) -> None:
        self.api_key = api_key
        self.signing_secret = signing_secret

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        timestamp = str(int(time.time()))
        target = request.url.raw_path.decode("ascii")  # path and query, exactly as they go on the wire
        request.headers["Authorization"] = f"Bearer {self.api_key}"
        request.headers["X-Timestamp"] = timestamp
        request.headers["X-Signature"] = signature_header(self.signing_secret, timestamp, request.method, target,
                                                          request.content)
        yield request
