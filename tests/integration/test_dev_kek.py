"""The development key-encryption key: commands beside `hostq dev` find it, and secrets sealed under another show."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

from domain.db import session_scope
from domain.provisioning.service import add_server
from domain.tenants.service import create_key
from hostq.admin import sealed_elsewhere
from tests.conftest import free_port


def _servers_add(hostq_cmd, env: dict, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([*hostq_cmd, "servers", "add", "--region", f"k{uuid.uuid4().hex[:6]}", "--url",
                           f"http://127.0.0.1:{free_port()}", "--username", "root", "--token", "t"],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_a_command_run_where_hostq_dev_keeps_its_key_uses_it(hostq_cmd, test_env, sessions, tmp_path):
    env = {k: v for k, v in {**os.environ, **test_env}.items() if k not in ("HOSTQ_KEK", "HOSTQ_ENV")}
    refused = _servers_add(hostq_cmd, env, tmp_path)
    assert refused.returncode == 2 and "HOSTQ_KEK is required" in refused.stderr, refused.stderr

    (tmp_path / ".hostq").mkdir()
    (tmp_path / ".hostq" / "dev-kek").write_text(test_env["HOSTQ_KEK"] + "\n")
    added = _servers_add(hostq_cmd, env, tmp_path)
    assert added.returncode == 0, added.stderr
    assert set(json.loads(added.stdout)) == {"server_id", "region"}

    production = _servers_add(hostq_cmd, {**env, "HOSTQ_ENV": "production"}, tmp_path)
    assert production.returncode == 2 and "HOSTQ_KEK is required" in production.stderr, production.stderr


async def test_sealed_elsewhere_counts_the_secrets_another_kek_sealed(sessions, settings, tenant):
    before = await sealed_elsewhere(settings)
    other_kek = os.urandom(32)
    async with session_scope(sessions) as session:
        await create_key(session, settings.require_kek(), tenant_id=tenant["tenant_id"], scopes=["jobs:read"])
        await create_key(session, other_kek, tenant_id=tenant["tenant_id"], scopes=["jobs:read"])
        await add_server(session, other_kek, region=f"k{uuid.uuid4().hex[:6]}",
                         url=f"http://127.0.0.1:{free_port()}", username="root", token="t")
        # disabled: no new orders, but its services' actions still call it
        holding = await add_server(session, other_kek, region=f"k{uuid.uuid4().hex[:6]}",
                                   url=f"http://127.0.0.1:{free_port()}", username="root", token="t")
        holding.enabled, holding.used = False, 2
        # disabled and empty: nothing will ever call it
        idle = await add_server(session, other_kek, region=f"k{uuid.uuid4().hex[:6]}",
                                url=f"http://127.0.0.1:{free_port()}", username="root", token="t")
        idle.enabled = False

    after = await sealed_elsewhere(settings)

    assert after == {"keys": before["keys"] + 1, "servers": before["servers"] + 2, "checked": before["checked"] + 4}
