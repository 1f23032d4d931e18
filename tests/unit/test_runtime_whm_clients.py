"""A worker's WHM clients follow `hostq servers update`: a new URL, username or token makes a new client."""

from __future__ import annotations

import base64
import secrets
import uuid

from domain.crypto import seal
from domain.provisioning.accounts import ServerRef
from domain.settings import load_settings
from workers.runtime import Runtime


def test_whm_for_reuses_a_client_until_the_server_s_row_changes():
    kek = secrets.token_bytes(32)
    settings = load_settings({"HOSTQ_KEK": base64.b64encode(kek).decode()})
    runtime = Runtime(settings=settings, sessions=None, db=None, redis=None)
    server_id = uuid.uuid4()

    def row(url: str, username: str = "root", token: str = "t1") -> ServerRef:
        return ServerRef(server_id, url, username, seal(kek, token, context=server_id.bytes))

    first = row("http://127.0.0.1:2087")
    client = runtime.whm_for(first)
    assert runtime.whm_for(first) is client
    moved = runtime.whm_for(row("http://127.0.0.1:2088"))
    assert moved is not client and moved.base_url == "http://127.0.0.1:2088"
    resealed = row("http://127.0.0.1:2088", token="t2")
    rotated = runtime.whm_for(resealed)
    assert rotated is not moved and rotated._headers["Authorization"] == "whm root:t2"
    assert runtime.whm_for(resealed) is rotated
    renamed = runtime.whm_for(resealed._replace(username="reseller"))
    assert renamed.username == "reseller" and renamed._headers["Authorization"] == "whm reseller:t2"
