"""bench/bench_team.py counts every failed call: no HTTP reply, a 5xx, an /info that is not 200, an unexpected
status; an infer's 4xx is a refusal, not a failure. Against a local HTTP server that answers what it is told."""

from __future__ import annotations

import http.server
import importlib.util
import sys
import threading

import pytest
import requests

from conftest import REPO, free_port


@pytest.fixture(scope="module")
def bench_team():
    sys.path.insert(0, str(REPO / "bench"))
    try:
        spec = importlib.util.spec_from_file_location("bench_team", REPO / "bench" / "bench_team.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(REPO / "bench"))


@pytest.fixture(scope="module")
def echo_status():
    """GET /STATUS answers STATUS with a JSON detail."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            status = int(self.path.strip("/") or 200)
            body = b'{"detail": "told to"}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_every_failure_is_counted_by_kind(bench_team, echo_status):
    calls = bench_team.Calls()
    _, reply = calls.call("next-sample", requests.get, f"{echo_status}/200", timeout=10)
    assert reply.status_code == 200 and not calls.failures
    calls.call("infer", requests.get, f"{echo_status}/422", timeout=10, ok=range(200, 500))  # a refusal
    assert not calls.failures
    calls.call("infer", requests.get, f"{echo_status}/500", timeout=10, ok=range(200, 500))
    calls.call("info", requests.get, f"{echo_status}/404", timeout=10)
    calls.call("release", requests.get, f"{echo_status}/403", timeout=10)
    _, missing = calls.call("save", requests.get, f"http://127.0.0.1:{free_port()}/", timeout=10)
    assert missing is None
    assert calls.failures == {"5xx: infer 500 told to": 1, "failed /info: info 404 told to": 1,
                              "unexpected: release 403 told to": 1, "no reply: save (ConnectionError)": 1}
