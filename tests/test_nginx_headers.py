"""The shipped deploy/nginx.conf never passes a client's own X-Forwarded-User to the bot.

Real nginx with the shipped config (made local exactly as tests/test_replicas.py does) in front of two
small HTTP servers that record the headers they receive, on the chat location and the API location.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from conftest import free_port, stop_process_group
from test_replicas import NGINX, _nginx_conf, _spawn, _wait_tcp

pytestmark = pytest.mark.skipif(
    not NGINX.exists(),
    reason=f"needs nginx at {NGINX}: scripts/test.sh installs Debian's `nginx`, or set RAG_BOT_NGINX",
)


class _Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[str]:
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _Echo) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    port = free_port()
    work = tmp_path / "nginx"
    work.mkdir()
    (work / "nginx.conf").write_text(_nginx_conf(work, [s.server_address[1] for s in servers], port), encoding="utf-8")
    proc = _spawn("nginx", [str(NGINX), "-p", str(work), "-c", str(work / "nginx.conf"), "-e", str(work / "error.log")],
                  None, work / "stdout.log")
    try:
        _wait_tcp(proc, port, 30, lambda: proc.log_tail())
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process_group(proc.popen)
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.mark.parametrize("path", ["/", "/auth/header", "/ws/socket.io/", "/api/v1/ask"])
def test_spoofed_user_header_is_cleared_by_the_shipped_nginx_config(proxy: str, path: str) -> None:
    response = httpx.get(proxy + path, headers={"X-Forwarded-User": "analyst", "X-Forwarded-For": "1.2.3.4"},
                         timeout=10)
    assert response.status_code == 200
    received = response.json()
    assert "x-forwarded-user" not in received, f"nginx passed the client's header on {path}: {received}"
    # The rest of the proxy headers still arrive (the chat location repeats them).
    assert received["x-forwarded-for"].startswith("1.2.3.4, 127.0.0.1")

