"""`hostq sandbox psp` as operators start it: payment webhooks over real HTTP to exactly the URL it was given,
signed with HOSTQ_PSP_WEBHOOK_SECRET."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from domain.payments.webhook_signature import HEADER, verify
from tests.conftest import free_port


class _Recorder(BaseHTTPRequestHandler):
    received: list[tuple[str, dict, bytes]] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["content-length"]))
        self.received.append((self.path, dict(self.headers), body))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_fake_psp_process_posts_a_signed_webhook_to_its_webhook_url(hostq_cmd, tmp_path):
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    port = free_port()
    hook = f"http://127.0.0.1:{receiver.server_port}/v1/webhooks/pix/sandbox"
    env = {**os.environ, "HOSTQ_PSP_WEBHOOK_SECRET": "e2e-secret"}
    with open(tmp_path / "psp.log", "w") as log:
        psp = subprocess.Popen([*hostq_cmd, "sandbox", "psp", "--port", str(port), "--webhook-url", hook],
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.get("/__sandbox/charges")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline and psp.poll() is None, (tmp_path / "psp.log").read_text()
                    time.sleep(0.1)
            txid = "e2echarge00000000000000000001"
            assert client.put(f"/v2/cob/{txid}", json={"valor": {"original": "19.90"},
                                                       "chave": "pix@hostq.example"}).status_code == 201
            paid = client.post(f"/__sandbox/pay/{txid}", json={"deliveries": 2}).json()
        assert paid["webhooks"] == [{"status": 200, "error": None}] * 2
        assert [path for path, _, _ in _Recorder.received] == ["/v1/webhooks/pix/sandbox"] * 2
        for _, headers, body in _Recorder.received:
            assert verify(["e2e-secret"], headers[HEADER], body, now=time.time())
            assert not verify(["sandbox"], headers[HEADER], body, now=time.time())
    finally:
        psp.terminate()
        psp.wait(timeout=20)
        receiver.shutdown()
