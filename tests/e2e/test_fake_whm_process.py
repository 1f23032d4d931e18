"""`hostq sandbox whm` as operators start it: refuses what it cannot serve, and stops promptly even while it
holds a request (fault `timeout` holds one for 600 s by default)."""

from __future__ import annotations

import subprocess
import threading
import time

import httpx

from tests.conftest import free_port


def test_a_fake_holding_a_request_stops_within_seconds_of_sigterm(hostq_cmd, tmp_path):
    port = free_port()
    with open(tmp_path / "whm.log", "w") as log:
        whm = subprocess.Popen([*hostq_cmd, "sandbox", "whm", "--port", str(port)], stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as control:
            deadline = time.monotonic() + 30
            while True:
                try:
                    control.post("/__sandbox/faults", json={"function": "createacct", "mode": "timeout"})
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline and whm.poll() is None, (tmp_path / "whm.log").read_text()
                    time.sleep(0.1)
        held = threading.Thread(target=_held_createacct, args=(port,), daemon=True)
        held.start()
        time.sleep(0.5)  # the request is in, held
        asked = time.monotonic()
        whm.terminate()
        assert whm.wait(timeout=15) == 0
        assert time.monotonic() - asked < 6, "the held request kept the fake from stopping"
    finally:
        if whm.poll() is None:
            whm.kill()


def _held_createacct(port: int) -> None:
    try:
        httpx.get(f"http://127.0.0.1:{port}/json-api/createacct", timeout=60,
                  params={"api.version": 1, "username": "held", "domain": "held.example", "plan": "basic",
                          "password": "x"}, headers={"Authorization": "whm root:sandbox"})
    except httpx.HTTPError:
        pass  # cut off when the fake stops


def test_an_empty_token_or_an_unwritable_state_file_stops_it_at_once_with_one_line(hostq_cmd, tmp_path):
    for extra, said in ((["--token", ""], "--token must not be empty"),
                        (["--state", str(tmp_path / "missing" / "whm.json")], "cannot write its state file")):
        done = subprocess.run([*hostq_cmd, "sandbox", "whm", "--port", str(free_port()), *extra],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 1 and said in done.stderr and "Traceback" not in done.stderr, done.stderr
