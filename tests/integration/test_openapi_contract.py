"""The published OpenAPI document against the app itself.

A plain test checks that every /v1 route is in the document, signed, and that POSTs take Idempotency-Key.
Then schemathesis fuzzes every /v1 operation in-process: each generated request is signed with a fresh
tenant's key (over the exact path, query and body that go on the wire), and each answer must be no 5xx,
a documented status, the documented content type, the documented headers and a body matching the schema.
"""

from __future__ import annotations

import itertools
import os
import time

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,
                                               response_schema_conformance, status_code_conformance)

from api.app import create_app
from api.auth import SCOPE_OPT
from domain.settings import load_settings
from domain.tenants.signing import signature_header
from tests.conftest import make_tenant, signed_client
from tests.integration.helpers import add_region, customer_and_plan, order_body

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
METHODS = {"get", "post", "put", "patch", "delete"}
# Cases per operation: the document's examples, then valid and invalid input about evenly.
EXAMPLES = int(os.environ.get("HOSTQ_FUZZ_EXAMPLES", 25))


def test_document_lists_every_v1_route_signed_and_idempotency_key_on_posts(app):
    document = app.openapi_schema.to_schema()
    paths = document["paths"]
    # The 404/405 fallbacks behind authentication (api/fallbacks.py) are left out of the document.
    routes = {(method, route.path_format) for route in app.routes if route.path_format.startswith("/v1")
              for handler in getattr(route, "route_handlers", ()) if handler.include_in_schema is not False
              for method in handler.http_methods if method.lower() in METHODS}
    documented = {(method.upper(), path) for path, item in paths.items() if path.startswith("/v1")
                  for method in item if method in METHODS}
    assert routes == documented  # every /v1 route is documented, and nothing else under /v1 is
    for method, path in sorted(routes):
        operation = paths.get(path, {}).get(method.lower())
        assert operation is not None, f"{method} {path} is not in the OpenAPI document"
        assert operation.get("security") == [{"signedRequest": []}], f"{method} {path} has no security"
        refs = {p.get("$ref", "").rsplit("/", 1)[-1] for p in operation["parameters"]}
        assert {"X-Timestamp", "X-Signature", "X-Request-Id"} <= refs, f"{method} {path}"
        assert ("Idempotency-Key" in refs) == (method == "POST"), f"{method} {path}"
        for status, response in operation["responses"].items():
            assert "X-Request-Id" in response["headers"], f"{method} {path} {status}"
            if status[0] in "45":
                assert list(response["content"]) == ["application/problem+json"], f"{method} {path} {status}"
        needed = next(h.opt.get(SCOPE_OPT) for r in app.routes if r.path_format == path
                      for h in getattr(r, "route_handlers", ()) if method in h.http_methods)
        if needed:  # the document says which scope a 403 is about
            assert f"The key needs the `{needed}` scope." in operation["description"], f"{method} {path}"
        statuses = set(operation["responses"])
        assert {"400", "401", "429", "500", "503"} <= statuses, f"{method} {path}"  # 400: e.g. an unknown query
        assert ("404" in statuses) == ("{" in path), f"{method} {path}"
        if method == "POST":
            assert {"400", "409", "413", "422"} <= statuses, f"{method} {path}"
    assert document["components"]["schemas"]["Problem"]["required"] == sorted(
        ["type", "title", "status", "detail", "code", "request_id"])
    assert document["components"]["securitySchemes"]["signedRequest"]["scheme"] == "bearer"


class RequestSigner(requests.auth.AuthBase):
    """Signs a prepared request as hostq.client.HostqSigner does, over the bytes the ASGI app will see."""

    def __init__(self, api_key: str, signing_secret: str) -> None:
        self.api_key, self.signing_secret = api_key, signing_secret

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        body = body.encode("utf-8") if isinstance(body, str) else body
        timestamp = str(int(time.time()))
        request.headers["Authorization"] = f"Bearer {self.api_key}"
        request.headers["X-Timestamp"] = timestamp
        request.headers["X-Signature"] = signature_header(self.signing_secret, timestamp, request.method,
                                                          request.path_url, body)
        return request


@pytest.fixture(scope="module")
async def seeded(app, sessions, settings) -> dict:
    """A fresh tenant with a high rate limit, a region with room, a customer, a plan, and a service in flight."""
    tenant = await make_tenant(sessions, settings, rate_limit=1_000_000)
    region, _ = await add_region(sessions, settings, capacity=1000)
    async with signed_client(app, tenant) as client:
        customer_id, plan = await customer_and_plan(client)
        ordered = await client.post("/v1/services", json=order_body(customer_id, plan, region))
        assert ordered.status_code == 202, ordered.text
    return {"tenant": tenant, "region": region, "customer_id": customer_id, "plan": plan,
            "service_id": ordered.json()["service"]["id"], "job_id": ordered.json()["job"]["id"]}


def _v1_operations() -> list[tuple[str, str]]:
    """(METHOD, path) of every /v1 operation in the document; read at collection, so from an app without a database."""
    document = create_app(load_settings({})).openapi_schema.to_schema()
    return [(method.upper(), path) for path, item in document["paths"].items() if path.startswith("/v1/")
            for method in item if method in METHODS]


@pytest.fixture(scope="module")
def fuzz_schema(settings, seeded):
    """The document as the app serves it, loaded from a fresh app that schemathesis runs (and starts) in-process."""
    schema = schemathesis.openapi.from_asgi("/schema/openapi.json", create_app(settings))
    serial = itertools.count()
    ids = {"customer_id": seeded["customer_id"], "service_id": seeded["service_id"], "job_id": seeded["job_id"]}

    @schema.hook
    def flatmap_path_parameters(ctx, path_parameters):
        # Random UUIDs only ever reach 404: half of the cases act on the tenant's real rows instead.
        known = {name: ids[name] for name in path_parameters or {} if name in ids}
        return st.sampled_from([path_parameters, {**path_parameters, **known}]) if known else st.just(path_parameters)

    @schema.hook
    def flatmap_body(ctx, body):
        # An order needs this tenant's customer and plan, and a region with a server, to pass validation.
        if ctx.operation.path != "/v1/services" or not isinstance(body, dict):
            return st.just(body)
        real = {"customer_id": seeded["customer_id"], "plan": seeded["plan"], "region": seeded["region"],
                "billing_cycle": "monthly", "provision": "now"}
        domains = st.integers(0, 10**9).map(lambda n: f"d{n}.example.com")
        valid = domains.map(lambda domain: {**{k: v for k, v in body.items() if k != "username"}, **real,
                                            "domain": domain})
        return st.one_of(valid, st.just(body))

    @schema.hook
    def map_headers(ctx, headers):
        # Derandomized generation repeats keys across cases, which would make most POSTs 422
        # idempotency_key_reused; a unique suffix keeps each key's validity but not its reuse. (Cases built
        # from the document's examples keep their one example key, so replays are exercised as well.)
        if headers and "Idempotency-Key" in headers:
            headers["Idempotency-Key"] = f"{headers['Idempotency-Key']}-{next(serial)}"
        return headers

    yield schema
    asgi.shutdown_lifespans()  # close the fuzzed app's database and Redis connections


@pytest.fixture(scope="module")
def fuzz_session(seeded) -> requests.Session:
    """The signing session schemathesis sends every request through."""
    session = requests.Session()
    session.auth = RequestSigner(seeded["tenant"]["api_key"], seeded["tenant"]["signing_secret"])
    return session


@pytest.mark.parametrize(("method", "path"), _v1_operations(), ids=lambda value: value)
def test_v1_operation_conforms_to_the_document(method, path, fuzz_schema, fuzz_session):
    operation = fuzz_schema[path][method]
    # The document's own examples (a valid customer, plan...) reach the success paths that random data rarely does.
    cases = st.one_of(*operation.get_strategies_from_examples(), operation.as_strategy(GenerationMode.POSITIVE),
                      operation.as_strategy(GenerationMode.NEGATIVE))

    statuses: list[int] = []

    @hypothesis.settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(case=cases)
    def call_and_check(case):
        statuses.append(case.call_and_validate(session=fuzz_session, checks=CHECKS).status_code)

    call_and_check()
    assert 401 not in statuses, "a signed request was refused: the signature does not cover what was sent"
