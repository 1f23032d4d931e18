"""Shared fixtures: one database per run built by the migrations, a Redis namespace per run, signed clients."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import shutil
import socket
import subprocess
import sys
import uuid

import httpx
import pytest
import redis

from domain.migrate import drop_database, upgrade
from domain.settings import Settings, load_settings

RUN = f"{os.getpid()}_{secrets.token_hex(3)}"
BASE_DB = os.environ.get("HOSTQ_TEST_DATABASE_BASE", "postgresql+asyncpg://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("HOSTQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port nobody listens on right now, and not one this run has handed out before: a fake WHM's URL
    is a server's identity (`hostq servers add` refuses one already registered), and the run's database
    keeps the servers of earlier tests."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


@pytest.fixture(scope="session")
def test_env() -> dict[str, str]:
    """The environment every hostq process of this run gets: own database, own Redis namespace, fast retries."""
    env = {
        "DATABASE_URL": f"{BASE_DB}/hostq_test_{RUN}",
        "REDIS_URL": REDIS_URL,
        "HOSTQ_KEK": base64.b64encode(secrets.token_bytes(32)).decode(),
        "HOSTQ_NAMESPACE": f"hostq-test-{RUN}",
        "HOSTQ_WHM_CREATE_TIMEOUT": "2",
        "HOSTQ_WHM_READ_TIMEOUT": "2",
        "HOSTQ_WHM_CREATE_SETTLE_S": "4",  # not the default 10 minutes after the timeout: tests wait it out
        "HOSTQ_JOB_MAX_ATTEMPTS": "3",
        "HOSTQ_JOB_BACKOFF_MIN_S": "0.05",
        "HOSTQ_JOB_BACKOFF_MAX_S": "0.2",
        "HOSTQ_RELAY_GRACE_S": "1",
    }
    yield env
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{env['HOSTQ_NAMESPACE']}*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture(scope="session")
def settings(test_env) -> Settings:
    """Settings of this run, after the database is created and migrated."""
    settings = load_settings(test_env)
    upgrade(settings.database_url)
    yield settings
    asyncio.run(drop_database(settings.database_url))


@pytest.fixture(scope="session")
async def sessions(settings):
    """A sessionmaker on the run's database."""
    from domain.db import make_engine, make_sessionmaker
    engine = make_engine(settings.database_url, pool_size=5)
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture(scope="session")
async def resources(settings):
    """The API's per-process resources, opened on the test loop."""
    from api.resources import Resources
    res = Resources.open(settings)
    yield res
    await res.close()


@pytest.fixture(scope="session")
def app(settings, resources):
    """The Litestar app under test."""
    from api.app import create_app
    return create_app(settings, resources)


async def make_tenant(sessions, settings, **kwargs) -> dict:
    """A fresh tenant with an all-scopes key: {"tenant_id", "slug", "api_key", "signing_secret", "key_id"}."""
    from domain.db import session_scope
    from domain.tenants.service import create_tenant
    async with session_scope(sessions) as session:
        tenant, cred = await create_tenant(session, settings.require_kek(), name=f"Tenant {uuid.uuid4().hex[:8]}",
                                           **kwargs)
    return {"tenant_id": tenant.id, "slug": tenant.slug, "api_key": cred.api_key,
            "signing_secret": cred.signing_secret, "key_id": cred.key_id}


@pytest.fixture
async def tenant(sessions, settings) -> dict:
    """A fresh tenant for one test."""
    return await make_tenant(sessions, settings)


def signed_client(app, creds: dict) -> httpx.AsyncClient:
    """An httpx client that signs every request with the tenant's credentials, talking to the app in-process."""
    from hostq.client import HostqSigner
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hostq.test",
                             auth=HostqSigner(creds["api_key"], creds["signing_secret"]))


@pytest.fixture
async def client(app, tenant):
    """A signed client of a fresh tenant."""
    async with signed_client(app, tenant) as c:
        yield c


@pytest.fixture
async def anon(app):
    """An unsigned client."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hostq.test") as c:
        yield c


@pytest.fixture(scope="session")
def hostq_cmd() -> list[str]:
    """How to run the `hostq` command of this checkout."""
    return [sys.executable, "-m", "hostq"]


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """A RabbitMQ virtual host of this run's own (its queues and messages only), deleted afterwards.

    HOSTQ_TEST_AMQP_URL names one made elsewhere (its vhost is used as it is and not deleted); otherwise
    `rabbitmqctl` (RabbitMQ's own tool, on every machine that runs RabbitMQ) makes `hostq_test_<run>`.
    """
    given = os.environ.get("HOSTQ_TEST_AMQP_URL")
    if given:
        yield given
        return
    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl is None:
        pytest.fail("the RabbitMQ tests need rabbitmqctl on PATH, or HOSTQ_TEST_AMQP_URL naming a vhost to use")
    vhost = f"hostq_test_{RUN}"
    for argv in (["add_vhost", vhost], ["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"]):
        subprocess.run([rabbitmqctl, *argv], check=True, capture_output=True, timeout=60)
    yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    subprocess.run([rabbitmqctl, "delete_vhost", vhost], capture_output=True, timeout=60, check=False)
