"""The signed edge: 401/403/413 problems, request ids, security headers."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from domain.tenants.signing import signature_header
from tests.conftest import make_tenant, signed_client


def _signed_headers(creds: dict, method: str, path: str, body: bytes, *, ts: int | None = None,
                    secret: str | None = None) -> dict:
    stamp = str(ts if ts is not None else int(time.time()))
    return {"Authorization": f"Bearer {creds['api_key']}", "X-Timestamp": stamp, "Content-Type": "application/json",
            "X-Signature": signature_header(secret or creds["signing_secret"], stamp, method, path, body)}


async def test_signed_request_is_accepted_and_unsigned_is_401_problem(client, anon):
    created = await client.post("/v1/customers", json={"name": "Ana", "email": "ana@example.com"})
    assert created.status_code == 201
    assert created.json()["email"] == "ana@example.com"

    unsigned = await anon.post("/v1/customers", json={"name": "Ana", "email": "ana@example.com"})
    assert unsigned.status_code == 401
    assert unsigned.headers["content-type"].startswith("application/problem+json")
    body = unsigned.json()
    assert body["code"] == "unauthenticated" and body["status"] == 401
    assert body["request_id"] == unsigned.headers["x-request-id"]
    assert unsigned.headers["www-authenticate"].startswith("Bearer ")  # RFC 9110: a 401 names its challenge


async def test_wrong_secret_stale_timestamp_and_tampered_body_are_401(anon, tenant):
    body = json.dumps({"name": "Ana", "email": "ana@example.com"}).encode()
    cases = [
        _signed_headers(tenant, "POST", "/v1/customers", body, secret="hqs_wrong"),
        _signed_headers(tenant, "POST", "/v1/customers", body, ts=int(time.time()) - 301),
        _signed_headers(tenant, "POST", "/v1/customers", b'{"name": "Eve", "email": "eve@example.com"}'),
        _signed_headers(tenant, "POST", "/v1/customers?x=1", body),
        {**_signed_headers(tenant, "POST", "/v1/customers", body), "Authorization": "Bearer hq_unknown"},
    ]
    for headers in cases:
        response = await anon.post("/v1/customers", content=body, headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["code"] == "unauthenticated"


async def test_signature_covers_the_query_string_exactly(anon, tenant):
    path = "/v1/customers?limit=1"
    ok = await anon.get(path, headers=_signed_headers(tenant, "GET", path, b""))
    assert ok.status_code == 200
    tampered = await anon.get("/v1/customers?limit=2", headers=_signed_headers(tenant, "GET", path, b""))
    assert tampered.status_code == 401
    # A bare "?" (an empty query) does not reach the app; signed with it or without, the request is the same
    for signed in ("/v1/customers?", "/v1/customers"):
        bare = await anon.get("/v1/customers?", headers=_signed_headers(tenant, "GET", signed, b""))
        assert bare.status_code == 200, (signed, bare.text)
    other = await anon.get("/v1/customers?limit=1", headers=_signed_headers(tenant, "GET", "/v1/customers?", b""))
    assert other.status_code == 401


async def test_auth_comes_before_path_and_body_validation(anon):
    response = await anon.get("/v1/customers/not-a-uuid")
    assert response.status_code == 401
    response = await anon.post("/v1/services", content=b"{not json")
    assert response.status_code == 401


async def test_key_without_scope_is_403(app, sessions, settings, tenant):
    from domain.db import session_scope
    from domain.tenants.service import create_key
    async with session_scope(sessions) as session:
        cred = await create_key(session, settings.require_kek(), tenant_id=tenant["tenant_id"],
                                scopes=["customers:read"])
    async with signed_client(app, {"api_key": cred.api_key, "signing_secret": cred.signing_secret}) as c:
        assert (await c.get("/v1/customers")).status_code == 200
        denied = await c.post("/v1/customers", json={"name": "Ana", "email": "ana@example.com"})
        assert denied.status_code == 403
        assert denied.json()["code"] == "forbidden"
        assert (await c.get("/v1/jobs/00000000-0000-0000-0000-000000000000")).status_code == 403


async def test_a_key_sealed_under_another_kek_is_a_500_and_one_log_line(app, sessions, tenant, caplog):
    import os
    from domain.db import session_scope
    from domain.tenants.service import create_key
    async with session_scope(sessions) as session:  # as if made by a hostq with another HOSTQ_KEK
        cred = await create_key(session, os.urandom(32), tenant_id=tenant["tenant_id"], scopes=["customers:read"])
    async with signed_client(app, {"api_key": cred.api_key, "signing_secret": cred.signing_secret}) as c:
        response = await c.get("/v1/customers")
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    assert "HOSTQ_KEK" not in response.text  # the caller learns nothing of the set-up
    logged = [r for r in caplog.records if r.name == "hostq.api" and str(cred.key_id) in r.getMessage()]
    assert len(logged) == 1 and "HOSTQ_KEK" in logged[0].getMessage()
    assert logged[0].levelname == "ERROR" and logged[0].exc_info is None


async def test_oversized_body_is_413_before_authentication(anon):
    response = await anon.post("/v1/customers", content=b"x" * (1024 * 1024 + 1),
                               headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert response.json()["detail"] == "the request body is larger than 1 MiB"


async def test_an_oversized_body_sent_without_a_length_gets_the_same_problem(client):
    async def chunks():
        for _ in range(17):
            yield b"x" * 65536
    response = await client.post("/v1/customers", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "content-length" not in response.request.headers
    assert (response.json()["code"], response.json()["detail"]) == (
        "payload_too_large", "the request body is larger than 1 MiB")


@pytest.mark.parametrize("body, why", [
    (b'{"name": ', "input data was truncated"),
    (b'{"name": "\xff\xfe"}'.decode("unicode_escape").encode("latin-1"), "invalid UTF-8 encoded string"),
    (b'{"name": "Ana"} junk', "trailing characters (byte 17)"),
])
async def test_a_body_that_is_not_json_is_one_kind_of_400_naming_the_body(client, body, why):
    response = await client.post("/v1/customers", content=body, headers={"Content-Type": "application/json"})
    problem = response.json()
    assert (response.status_code, problem["code"]) == (400, "validation_error")
    assert problem["detail"] == f"the body is not valid JSON: {why}"
    assert problem["errors"] == [{"field": "body", "message": "not valid JSON"}]


async def test_request_id_is_echoed_and_headers_are_safe(client):
    response = await client.get("/v1/customers", headers={"X-Request-Id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "server" not in response.headers
    generated = await client.get("/v1/customers", headers={"X-Request-Id": "x" * 129})
    assert generated.headers["x-request-id"] != "x" * 129


async def test_unknown_route_is_404_problem_with_request_id(anon):
    response = await anon.get("/nope")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert response.headers["x-request-id"]


async def test_unknown_v1_paths_and_methods_are_authenticated_first(anon, client):
    customer = (await client.post("/v1/customers", json={"name": "Ana", "email": "ana@example.com"})).json()
    for method, path in (("GET", "/v1/nonexistent"), ("GET", "/v1/invoices"), ("POST", "/v1/invoices/x/pay"),
                         ("PUT", "/v1/customers"), ("DELETE", f"/v1/customers/{customer['id']}/export"),
                         ("GET", "/v1/customers/abc/nothing-here"), ("GET", "/v1/services/x/suspend"),
                         ("GET", "/v1"), ("POST", "/v1/")):
        unsigned = await anon.request(method, path)
        assert unsigned.status_code == 401 and unsigned.json()["code"] == "unauthenticated", (method, path)
        signed = await client.request(method, path)
        expected = (404, "not_found") if method in ("GET", "POST") and "suspend" not in path else (405, None)
        assert signed.status_code == expected[0], (method, path, signed.text)
        assert signed.headers["content-type"].startswith("application/problem+json"), (method, path)
        assert "x-ratelimit-remaining" in signed.headers, (method, path)  # an authenticated answer
        if expected[1]:
            assert signed.json()["code"] == expected[1]
        if expected[0] == 404 and path not in ("/v1", "/v1/"):
            assert signed.json()["detail"] == f"no route {path}", signed.json()  # the path asked for, whole
    put = await client.put("/v1/customers")
    assert put.json()["code"] == "method_not_allowed" and put.headers["allow"] == "GET, POST"
    for path in ("/v1/customers", "/v1/nope", f"/v1/customers/{customer['id']}"):  # HEAD: no body, same order
        assert (await anon.head(path)).status_code == 401, path
    head = await client.head("/v1/customers")
    assert head.status_code == 405 and head.headers["allow"] == "GET, POST" and head.content == b""
    # A signed OPTIONS (no Origin: not a preflight) names every method of the path, as its 405 does.
    for path, methods in (("/v1/customers", "GET, POST, OPTIONS"), ("/v1/tenant", "GET, PATCH, OPTIONS"),
                          (f"/v1/customers/{customer['id']}", "DELETE, GET, OPTIONS")):
        assert (await anon.options(path)).status_code == 401, path
        options = await client.options(path)
        assert (options.status_code, options.headers["allow"]) == (204, methods), path
        assert "x-ratelimit-remaining" in options.headers and "x-request-id" in options.headers
    for path in ("/v1/nope", "/v1/customers/abc/def/ghi", "/v1"):  # a path no route has: 404, as a GET of it
        options = await client.options(path)
        assert (options.status_code, options.json()["code"]) == (404, "not_found"), (path, options.text)
    schema = (await anon.get("/schema/openapi.json")).json()
    assert not [p for p in schema["paths"] if "{rest" in p]


async def test_the_openapi_document_is_served_without_html_viewers(anon):
    """Litestar's HTML viewers inline the document in a script loaded beside CDN scripts: not served. Any HTML
    answer (here Litestar's own 404 below /schema) carries a strict Content-Security-Policy."""
    for path in ("/schema/openapi.json", "/schema/openapi.yaml"):
        assert (await anon.get(path)).status_code == 200, path
    for path in ("/schema/swagger", "/schema/redoc"):
        page = await anon.get(path)
        assert page.status_code == 404, path
        if page.headers["content-type"].startswith("text/html"):
            assert page.headers["content-security-policy"].startswith("default-src 'none'"), path
    assert "content-security-policy" not in (await anon.get("/schema/openapi.json")).headers


async def test_health_and_openapi(anon):
    ready = await anon.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["checks"] == {"postgres": "ok", "redis": "ok"}
    for path in ("/health/live", "/health/ready"):  # as load balancers ask: the GET's answer without its body
        probe = await anon.head(path)
        assert probe.status_code == 200 and probe.content == b"" and int(probe.headers["content-length"]) > 0, path
    schema = (await anon.get("/schema/openapi.json")).json()
    for path in ("/v1/customers", "/v1/customers/{customer_id}", "/v1/plans", "/v1/services",
                 "/v1/services/{service_id}", "/v1/jobs/{job_id}", "/v1/provision/{job_id}/status"):
        assert path in schema["paths"], path
    assert "signedRequest" in schema["components"]["securitySchemes"]


async def _ready(settings, **changes) -> tuple[httpx.Response, float]:
    """`GET /health/ready` of an app whose settings differ by `changes`, and the seconds it took."""
    from dataclasses import replace

    from api.app import create_app
    from api.resources import Resources
    resources = Resources.open(replace(settings, **changes))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(settings, resources)),
                                     base_url="http://t") as c:
            started = time.monotonic()
            response = await c.get("/health/ready")
            return response, time.monotonic() - started
    finally:
        await resources.close()


async def test_ready_names_the_dependency_that_is_down(settings):
    response, seconds = await _ready(settings, redis_url="redis://127.0.0.1:1/0")
    assert response.status_code == 503
    # The broker still points at the working Redis: checked on its own, and named apart.
    assert response.json()["checks"] == {"postgres": "ok", "redis": "down", "broker": "ok"}
    assert "redis" in response.json()["detail"]
    assert seconds < 3


async def test_ready_checks_a_rabbitmq_broker(settings, amqp_url):
    for broker_url, state, status in ((amqp_url, "ok", 200), ("amqp://guest:guest@127.0.0.1:1/", "down", 503)):
        response, _ = await _ready(settings, broker_url=broker_url)
        assert response.status_code == status, response.text
        assert response.json()["checks"] == {"postgres": "ok", "redis": "ok", "rabbitmq": state}


async def test_ready_calls_a_broker_that_accepts_connections_but_never_answers_down(settings, monkeypatch):
    monkeypatch.setattr("api.health.CHECK_TIMEOUT_S", 0.5)  # the silent broker costs this per probe
    held: list[asyncio.StreamWriter] = []

    async def silent(reader, writer):  # accepts, reads, never answers (a stuck broker)
        held.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for broker_url, name in ((f"amqp://guest:guest@127.0.0.1:{port}/", "rabbitmq"),
                                 (f"redis://127.0.0.1:{port}/0", "broker"),
                                 (settings.redis_url.rsplit("/", 1)[0] + "/15", "broker")):
            response, seconds = await _ready(settings, broker_url=broker_url)
            expected = "ok" if broker_url.endswith("/15") else "down"  # the last: a real Redis (db 15) answers
            assert response.json()["checks"][name] == expected, (broker_url, response.text)
            assert response.status_code == (200 if expected == "ok" else 503)
            assert seconds < 1.5
    finally:
        server.close()
        for writer in held:
            writer.close()


async def test_tenants_are_isolated(app, sessions, settings, client):
    mine = (await client.post("/v1/customers", json={"name": "Ana", "email": "ana@example.com"})).json()
    other = await make_tenant(sessions, settings)
    async with signed_client(app, other) as theirs:
        assert (await theirs.get(f"/v1/customers/{mine['id']}")).status_code == 404
        listed = (await theirs.get("/v1/customers")).json()
        assert mine["id"] not in [c["id"] for c in listed["data"]]


async def test_a_body_nested_too_deeply_is_a_400_not_a_server_error(client):
    """A few KB of brackets would exhaust the JSON decoder's recursion: bad input, answered as such."""
    for depth in (100, 5000):
        body = b'{"name": ' + b"[" * depth + b"]" * depth + b"}"
        response = await client.post("/v1/customers", content=body, headers={"Content-Type": "application/json"})
        problem = response.json()
        assert (response.status_code, problem["code"]) == (400, "validation_error"), (depth, problem)
        assert problem["errors"][0]["field"] == ("name" if depth == 100 else "body"), problem
    assert (await client.get("/v1/customers")).json()["data"] == []  # nothing was stored


async def test_a_signed_get_cannot_be_replayed_with_part_of_its_query_as_a_body(anon, client, tenant):
    """The signed payload joins path and body with a "."; a GET's body, which no route reads, is refused."""
    for external_id in ("acme", "acme.secret"):
        assert (await client.post("/v1/customers", json={"name": "A", "email": "a@example.com",
                                                          "external_id": external_id})).status_code == 201
    stamp = str(int(time.time()))
    signed = {"Authorization": f"Bearer {tenant['api_key']}", "X-Timestamp": stamp,
              "X-Signature": signature_header(tenant["signing_secret"], stamp, "GET",
                                              "/v1/customers?external_id=acme.secret", b"")}
    assert (await anon.get("/v1/customers?external_id=acme.secret", headers=signed)).status_code == 200
    moved = await anon.request("GET", "/v1/customers?external_id=acme", headers=signed, content=b"secret.")
    assert (moved.status_code, moved.json()["code"]) == (400, "validation_error"), moved.text
    assert moved.json()["detail"] == "a GET request takes no body"
    again = await anon.request("GET", "/v1/customers?external_id=acme", headers=signed, content=b"secret.")
    # counted by the rate limit like any authenticated request
    assert int(again.headers["x-ratelimit-remaining"]) == int(moved.headers["x-ratelimit-remaining"]) - 1


async def test_a_signature_that_is_not_ascii_is_a_401(anon, tenant):
    stamp = str(int(time.time()))
    response = await anon.get("/v1/customers", headers={"Authorization": f"Bearer {tenant['api_key']}",
                                                         "X-Timestamp": stamp, "X-Signature": "v1=\xe9".encode("latin-1")})
    assert (response.status_code, response.json()["code"]) == (401, "unauthenticated"), response.text


async def test_a_signature_in_upper_case_hex_verifies(anon, tenant):
    """.NET's and Java's hex encoders write upper case: the digest is the same number."""
    headers = _signed_headers(tenant, "GET", "/v1/customers", b"")
    headers["X-Signature"] = "v1=" + headers["X-Signature"].removeprefix("v1=").upper()
    assert (await anon.get("/v1/customers", headers=headers)).status_code == 200


async def test_several_x_signature_lines_count_as_one_and_differing_credentials_are_refused(anon, tenant):
    """RFC 9110: field lines of one name mean their values joined by commas, so the valid `v1=` may be on any of
    them; two different Authorization or X-Timestamp lines leave the caller uncertain: 401."""
    good = _signed_headers(tenant, "GET", "/v1/customers", b"")
    wrong = _signed_headers(tenant, "GET", "/v1/customers", b"", secret="hqs_wrong")["X-Signature"]
    base = [(name, value) for name, value in good.items() if name != "X-Signature"]
    for lines in ([wrong, good["X-Signature"]], [good["X-Signature"], wrong]):
        both = await anon.get("/v1/customers", headers=[*base, *(("X-Signature", line) for line in lines)])
        assert both.status_code == 200, (lines, both.text)
    for name, other in (("Authorization", "Bearer hq_someone_else"), ("X-Timestamp", str(int(time.time()) - 1))):
        twice = await anon.get("/v1/customers", headers=[*good.items(), (name, other)])
        assert (twice.status_code, twice.json()["code"]) == (401, "unauthenticated"), name
    same_twice = await anon.get("/v1/customers", headers=[*good.items(), ("X-Timestamp", good["X-Timestamp"])])
    assert same_twice.status_code == 200
