"""Two replicas behind a reverse proxy: a conversation started on one continues on the other.

Two `rag-bot serve` processes (own ports, own state folders) share only what the documented deployment
(deploy/compose.yaml) shares: the Postgres database, the API keys file, the auth secret and the LLM's
URL. In front of them runs nginx with deploy/nginx.conf itself, its upstream servers pointed at the two
local ports: round-robin with one worker, so requests alternate strictly, first replica A, then B. nginx
names the replica that answered in an `X-Upstream` header (and its access log); each replica's own
/metrics counts the question it answered, as a second witness.

The follow-up is answered by the replica that did not see the first question, so it can only inherit the
first turn's intent and domain (route path "followup") from the conversation stored in Postgres.

The LLM is the session's llama.cpp server (`llamacpp_server`). RAG_BOT_TEST_STUB_LLM=1 swaps in a tiny
OpenAI-compatible stub served from this module, for developing the test without loading a model.
nginx's path: RAG_BOT_NGINX, else `nginx` on PATH, else /usr/sbin/nginx (scripts/test.sh installs
Debian's package with apt).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from conftest import REPO, free_port, group_alive, stop_process_group
from prometheus_client.parser import text_string_to_metric_families

from rag_bot.api.keys import add_key
from rag_bot.config import Settings
from rag_bot.store import VectorStore

NGINX = Path(os.environ.get("RAG_BOT_NGINX") or shutil.which("nginx") or "/usr/sbin/nginx")
STUB_LLM = os.environ.get("RAG_BOT_TEST_STUB_LLM") == "1"
STUB_ANSWER = "По Москве доставка бесплатна от 50 000 рублей [1]."

pytestmark = [
    pytest.mark.e2e, pytest.mark.llm, pytest.mark.slow, pytest.mark.timeout(1800),
    pytest.mark.skipif(
        not os.access(NGINX, os.X_OK),
        reason=f"the replica test needs nginx at {NGINX}, which is missing: scripts/test.sh installs Debian's "
        "`nginx` with apt-get when it runs as root or with sudo; or set RAG_BOT_NGINX to an nginx binary.",
    ),
]

# Read by the shared `seeded` fixture (tests/conftest.py): (source, domain, audience, text).
DOCS = [
    ("delivery-moscow.md", "support", "public",
     "Доставка по Москве. В 2025 году доставка бесплатна при заказе от 50 000 рублей, иначе стоит 1 500 рублей. "
     "В 2024 году доставка была бесплатной от 30 000 рублей, иначе стоила 1 200 рублей."),
    ("warranty.md", "support", "public",
     "Laptops have a 24-month warranty. Warranty repairs are done by the service centre within 14 days."),
]
FIRST = "Какие условия доставки по Москве действуют в 2025 году?"
FOLLOWUP = "а за прошлый год?"
KEY_ID = "helpdesk"
# Longer than nginx's proxy_read_timeout (600 s in deploy/nginx.conf): a slow answer shows as nginx's 504.
CLIENT_TIMEOUT_S = 900


# -- an OpenAI-compatible stub, only with RAG_BOT_TEST_STUB_LLM=1 -----------------------------------
class _StubLLMHandler(BaseHTTPRequestHandler):
    """GET /v1/models; POST /v1/chat/completions, whole or streamed (SSE): always STUB_ANSWER."""

    server: _StubLLMServer

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.rstrip("/").endswith("/models"):
            self._json({"object": "list", "data": [{"id": "ci-model", "object": "model", "owned_by": "stub"}]})
        else:
            self._json({"error": {"message": f"no {self.path}"}}, status=404)

    def do_POST(self) -> None:  # noqa: N802
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._json({"error": {"message": f"no {self.path}"}}, status=404)
            return
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        with self.server.lock:
            self.server.received.append(body.get("messages", []))
        model = body.get("model", "ci-model")
        if not body.get("stream"):
            self._json({"id": "stub", "object": "chat.completion", "created": 0, "model": model,
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": STUB_ANSWER}}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()  # HTTP/1.0: the stream ends when the connection closes
        pieces = [STUB_ANSWER[i:i + 8] for i in range(0, len(STUB_ANSWER), 8)]
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            chunk = {"id": "stub", "object": "chat.completion.chunk", "created": 0, "model": model,
                     "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": "stop" if last else None}]}
            self.wfile.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _json(self, value: dict[str, Any], status: int = 200) -> None:
        data = json.dumps(value, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass


class _StubLLMServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _StubLLMHandler)
        self.received: list[list[dict[str, str]]] = []
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


@dataclass
class LLM:
    base_url: str
    stub: _StubLLMServer | None = None


@pytest.fixture(scope="module")
def llm(request: pytest.FixtureRequest) -> Iterator[LLM]:
    """The session's llama.cpp server; the stub when RAG_BOT_TEST_STUB_LLM=1 (llama.cpp is then not started)."""
    if not STUB_LLM:
        yield LLM(request.getfixturevalue("llamacpp_server"))
        return
    stub = _StubLLMServer()
    thread = threading.Thread(target=stub.serve_forever, name="stub-llm", daemon=True)
    thread.start()
    try:
        yield LLM(stub.base_url, stub)
    finally:
        stub.shutdown()
        stub.server_close()
        thread.join(timeout=10)


# -- processes -------------------------------------------------------------------------------------
@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-chars:] if self.log.exists() else ""


@dataclass
class Cluster:
    """Replicas A and B and the proxy in front of them; `stop()` ends all three process groups."""

    proxy_url: str
    replicas: dict[str, str]  # name -> base URL
    addresses: dict[str, str]  # nginx's $upstream_addr -> name
    store_url: str
    access_log: Path
    procs: list[Proc] = field(default_factory=list)

    def stop(self) -> list[str]:
        """Stop the proxy first, then the replicas; the names of groups that outlived their stop."""
        left: list[str] = []
        for proc in reversed(self.procs):
            if not stop_process_group(proc.popen):
                left.append(proc.name)
        return left

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log_tail()}" for p in self.procs)


def _spawn(name: str, argv: list[str], env: dict[str, str] | None, log: Path) -> Proc:
    with log.open("wb") as sink:
        popen = subprocess.Popen(argv, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    return Proc(name, popen, log)


def _replica_env(store_url: str, llm_url: str, state_dir: Path, port: int, keys_file: Path,
                 auth_secret: str) -> dict[str, str]:
    """What deploy/compose.yaml gives each bot: shared database, keys, secret and LLM URL; its own state."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_BOT_", "CHAINLIT_"))}
    env.update({
        "RAG_BOT_DATABASE_URL": store_url,
        "RAG_BOT_API_KEYS_FILE": str(keys_file),
        "RAG_BOT_AUTH_SECRET": auth_secret,
        "RAG_BOT_LLM_BASE_URL": llm_url,
        "RAG_BOT_LLM_MODEL": "ci-model",
        "RAG_BOT_LLM_TIMEOUT_S": "2400",  # never resend a question the one-request llama.cpp still works on
        "RAG_BOT_LLM_MAX_TOKENS": "256",
        "RAG_BOT_STATE_DIR": str(state_dir),
        # The embedder's weights, as the test process found them (the store's embeddings came from it).
        "RAG_BOT_CACHE_DIR": str(Settings().cache_dir),
        "RAG_BOT_EMBEDDING_THREADS": "1",  # two replicas on a shared 2-core machine
        # Warm up the key's profile only (the analyst default would open the company database and
        # start chart sandbox workers, neither of which this test uses).
        "RAG_BOT_DEFAULT_PROFILE": "support",
        "RAG_BOT_UI_HOST": "127.0.0.1",
        "RAG_BOT_UI_PORT": str(port),
        "PYTHONUNBUFFERED": "1",
    })
    return env


def _nginx_conf(work: Path, upstreams: list[int], port: int) -> str:
    """deploy/nginx.conf as an http block, its servers and listen port made local; everything nginx
    writes stays in `work`. One worker: one round-robin state, so requests alternate strictly."""
    deployed = (REPO / "deploy" / "nginx.conf").read_text(encoding="utf-8")
    local = {
        "server bot-1:8000;": f"server 127.0.0.1:{upstreams[0]};",
        "server bot-2:8000;": f"server 127.0.0.1:{upstreams[1]};",
        "listen 80;": f"listen 127.0.0.1:{port};",
    }
    for deployed_text, local_text in local.items():
        assert deployed_text in deployed, f"deploy/nginx.conf changed: no '{deployed_text}' to point at the test"
        deployed = deployed.replace(deployed_text, local_text)
    temp = "\n".join(f"  {kind}_temp_path {work / kind};" for kind in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""daemon off;
master_process on;
worker_processes 1;
pid {work / "nginx.pid"};
error_log {work / "error.log"} info;
events {{ worker_connections 64; }}
http {{
{temp}
  log_format upstream '$request_method $request_uri $status upstream=$upstream_addr';
  access_log {work / "access.log"} upstream;
  # Which replica answered (inherited by every location of deploy/nginx.conf, which sets no add_header).
  add_header X-Upstream $upstream_addr always;
{deployed}
}}
"""


def _wait_http(proc: Proc, url: str, timeout_s: float, logs: Any) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.popen.poll() is None, f"{proc.name} exited with {proc.popen.returncode}:\n{logs()}"
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} not answering after {timeout_s:.0f} s:\n{logs()}"
        time.sleep(0.5)


def _wait_tcp(proc: Proc, port: int, timeout_s: float, logs: Any) -> None:
    """The proxy listens. A connection without a request: no request may use up a round-robin turn."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.popen.poll() is None, f"{proc.name} exited with {proc.popen.returncode}:\n{logs()}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{proc.name} not listening after {timeout_s:.0f} s:\n{logs()}"
        time.sleep(0.2)


@pytest.fixture
def api_key(tmp_path: Path) -> tuple[Path, str]:
    """One keys file for both replicas (compose mounts one config folder into each) and its support key."""
    keys_file = tmp_path / "config" / "api_keys.yaml"
    return keys_file, add_key(keys_file, KEY_ID, "support")


@pytest.fixture
def cluster(seeded: VectorStore, fresh_db_url: str, llm: LLM, api_key: tuple[Path, str],
            tmp_path: Path) -> Iterator[Cluster]:
    """Replicas A and B on the seeded store and nginx in front; stopped (and checked) at the end."""
    keys_file, _ = api_key
    auth_secret = secrets.token_urlsafe(48)
    free: set[int] = set()
    while len(free) < 3:  # three different ports (free_port may hand out one just released)
        free.add(free_port())
    port_a, port_b, proxy_port = sorted(free)
    ports = {"A": port_a, "B": port_b}
    nginx_dir = tmp_path / "nginx"
    nginx_dir.mkdir()
    (nginx_dir / "nginx.conf").write_text(_nginx_conf(nginx_dir, [ports["A"], ports["B"]], proxy_port),
                                          encoding="utf-8")
    cluster = Cluster(
        proxy_url=f"http://127.0.0.1:{proxy_port}",
        replicas={name: f"http://127.0.0.1:{port}" for name, port in ports.items()},
        addresses={f"127.0.0.1:{port}": name for name, port in ports.items()},
        store_url=fresh_db_url, access_log=nginx_dir / "access.log",
    )
    try:
        for name, port in ports.items():
            state = tmp_path / f"replica_{name}"
            state.mkdir()
            env = _replica_env(fresh_db_url, llm.base_url, state, port, keys_file, auth_secret)
            cluster.procs.append(_spawn(f"replica {name}", [sys.executable, "-m", "rag_bot.cli", "serve"], env,
                                        tmp_path / f"replica_{name}.log"))
        for proc, url in zip(cluster.procs, cluster.replicas.values(), strict=True):
            _wait_http(proc, url + "/healthz", 180, cluster.logs)
            ready = httpx.get(url + "/readyz", timeout=30)
            assert ready.status_code == 200, f"{proc.name} cannot reach Postgres: {ready.text}\n{cluster.logs()}"
        proxy = _spawn("nginx", [str(NGINX), "-p", str(nginx_dir), "-c", str(nginx_dir / "nginx.conf"),
                                 "-e", str(nginx_dir / "error.log")], None, nginx_dir / "stdout.log")
        cluster.procs.append(proxy)
        _wait_tcp(proxy, proxy_port, 30, lambda: cluster.logs() + "\n" + _read(nginx_dir / "error.log"))
        yield cluster
    finally:
        left = cluster.stop()
        if left:
            pytest.fail(f"processes of {', '.join(left)} were still running after the stop (killed now)")


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-4000:] if path.exists() else ""


def _questions_answered(base_url: str) -> float:
    """This replica's own count of API questions (per process: it is no shared counter)."""
    total = 0.0
    for family in text_string_to_metric_families(httpx.get(base_url + "/metrics", timeout=30).text):
        for sample in family.samples:
            if sample.name == "rag_bot_questions_total" and sample.labels.get("channel") == "api":
                total += sample.value
    return total


# -- the test --------------------------------------------------------------------------------------
def test_conversation_continues_on_the_other_replica_behind_the_proxy(
    cluster: Cluster, api_key: tuple[Path, str], llm: LLM
) -> None:
    _, key = api_key
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=cluster.proxy_url, timeout=CLIENT_TIMEOUT_S) as client:
        first = client.post("/api/v1/ask", json={"question": FIRST}, headers=headers)
        assert first.status_code == 200, f"{first.status_code} {first.text}\n{cluster.logs()}"
        body = first.json()
        conversation_id = body["conversation_id"]
        followup = client.post("/api/v1/ask", json={"question": FOLLOWUP, "conversation_id": conversation_id},
                               headers=headers)
        assert followup.status_code == 200, f"{followup.status_code} {followup.text}\n{cluster.logs()}"
        again = followup.json()

    # Strict round-robin: A answered the question, B the follow-up (nginx's word and each replica's own).
    served = [cluster.addresses.get(r.headers.get("X-Upstream", "")) for r in (first, followup)]
    assert served == ["A", "B"], f"X-Upstream: {first.headers.get('X-Upstream')}, {followup.headers.get('X-Upstream')}"
    assert [_questions_answered(url) for url in cluster.replicas.values()] == [1.0, 1.0]
    log = _read(cluster.access_log).splitlines()
    assert [cluster.addresses.get(line.rsplit("upstream=", 1)[-1]) for line in log] == ["A", "B"], log

    # The question routed to a domain; B, which never saw it, continued the same conversation.
    # (Which other domains the router adds is the router's business, measured by `rag-bot eval router`.)
    assert (body["intent"], body["domains"][0], body["language"]) == ("docs", "support", "ru")
    assert again["conversation_id"] == conversation_id
    assert (again["intent"], again["domains"]) == (body["intent"], body["domains"])
    for answer in (body, again):
        assert answer["answer"].strip()
        assert "delivery-moscow.md" in [s["source"] for s in answer["sources"]]

    # Both turns are in Postgres, the second routed as a follow-up of the first.
    with psycopg.connect(cluster.store_url) as conn:
        row = conn.execute("SELECT profile, turns FROM conversations WHERE id = %s",
                           (f"api:{KEY_ID}:{conversation_id}",)).fetchone()
    assert row is not None, "the conversation is not in Postgres"
    profile, turns = row
    assert profile == "support"
    assert [t["message"] for t in turns] == [FIRST, FOLLOWUP]
    assert [t["answer"] for t in turns] == [body["answer"], again["answer"]]
    assert turns[0]["route"]["path"] != "followup"
    assert turns[1]["route"]["path"] == "followup"
    assert (turns[1]["route"]["intent"], turns[1]["route"]["domains"]) == ("docs", again["domains"])
    assert turns[1]["route"]["domains"][0] == "support"

    if llm.stub is not None:
        # The stub saw the prompts: B searched and asked the follow-up together with A's question.
        assert body["answer"] == again["answer"] == STUB_ANSWER
        followup_prompt = "\n".join(m["content"] for m in llm.stub.received[-1])
        assert FIRST in followup_prompt and FOLLOWUP in followup_prompt

    # Every process of the three groups ends with the stop.
    assert cluster.stop() == []
    for proc in cluster.procs:
        assert proc.popen.poll() is not None and not group_alive(proc.popen.pid), proc.name
