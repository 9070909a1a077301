"""The MCP server of a really running `rag-bot serve`, driven by the official SDK's client.

One server process on the seeded store, the demo company database (read-only role) and the session's
llama.cpp server. Two API keys: `support` (public documents only, no data access) and `analyst`
(documents and data). The key decides what the MCP tools may reach, as for the HTTP API.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from analytics_fixtures import demo_admin_url, demo_db  # noqa: F401 - fixtures
from conftest import REPO, free_port, stop_process_group
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent

from rag_bot.api.keys import add_key
from rag_bot.config import Settings
from rag_bot.demo.load import DemoLoadReport
from rag_bot.store import VectorStore

pytestmark = [pytest.mark.e2e, pytest.mark.llm, pytest.mark.slow, pytest.mark.timeout(1200)]

DOCS = [
    ("warranty.md", "support", "public",
     "Laptops have a 24-month warranty. Warranty repairs are done by the service centre within 14 days."),
    ("warranty-costs.md", "support", "internal",
     "Internal: the warranty repair budget is 1.2 million rubles per quarter; the supplier reimburses 60 % "
     "of repair costs."),
]
SECRET = "1.2 million"


@dataclass
class Server:
    url: str
    keys: dict[str, str]  # profile -> key
    popen: subprocess.Popen[bytes]
    log: Path

    def log_tail(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:] if self.log.exists() else ""


@pytest.fixture
def server(seeded: VectorStore, fresh_db_url: str, llamacpp_server: str, demo_db: DemoLoadReport,  # noqa: F811
           tmp_path: Path) -> Iterator[Server]:
    keys_file = tmp_path / "api_keys.yaml"
    keys = {profile: add_key(keys_file, f"{profile}-desk", profile) for profile in ("support", "analyst")}
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_BOT_", "CHAINLIT_"))}
    env.update({
        "RAG_BOT_DATABASE_URL": fresh_db_url,
        "RAG_BOT_COMPANY_DATABASE_URL": demo_db.readonly_url,
        "RAG_BOT_API_KEYS_FILE": str(keys_file),
        "RAG_BOT_AUTH_SECRET": secrets.token_urlsafe(48),
        "RAG_BOT_LLM_BASE_URL": llamacpp_server,
        "RAG_BOT_LLM_MODEL": "ci-model",
        "RAG_BOT_LLM_TIMEOUT_S": "900",
        "RAG_BOT_LLM_MAX_TOKENS": "200",
        "RAG_BOT_STATE_DIR": str(tmp_path / "state"),
        "RAG_BOT_CACHE_DIR": str(Settings().cache_dir),
        "RAG_BOT_EMBEDDING_THREADS": "1",
        "RAG_BOT_DEFAULT_PROFILE": "support",
        "RAG_BOT_UI_HOST": "127.0.0.1",
        "RAG_BOT_UI_PORT": str(port),
        "PYTHONUNBUFFERED": "1",
    })
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        popen = subprocess.Popen([sys.executable, "-m", "rag_bot.cli", "serve"], cwd=REPO, env=env, stdout=sink,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    running = Server(f"http://127.0.0.1:{port}", keys, popen, log)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert popen.poll() is None, f"rag-bot serve exited with {popen.returncode}:\n{running.log_tail()}"
            try:
                if httpx.get(running.url + "/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"rag-bot serve not answering:\n{running.log_tail()}"
            time.sleep(0.5)
        yield running
    finally:
        assert stop_process_group(popen), "processes of rag-bot serve outlived its stop"


async def _session_calls(url: str, key: str, calls: list[tuple[str, dict[str, Any]]]
                         ) -> tuple[list[str], list[CallToolResult]]:
    """Connect with the SDK's client, list the tools, make the calls; (tool names, results)."""
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(30, read=900)) as http:
        async with streamable_http_client(url + "/mcp", http_client=http) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = [tool.name for tool in (await session.list_tools()).tools]
                results = [await session.call_tool(name, arguments) for name, arguments in calls]
    return tools, results


def _text(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


def test_mcp_client_lists_tools_asks_and_a_support_key_cannot_query_data(
    server: Server, demo_admin_url: str  # noqa: F811
) -> None:
    tools, (answer, search, data) = asyncio.run(_session_calls(server.url, server.keys["support"], [
        ("ask", {"question": "How long is the warranty on laptops?"}),
        ("search_documents", {"query": "warranty repair costs"}),
        ("query_data", {"sql": "SELECT count(*) FROM orders"}),
    ]))

    # A support key sees no data tool, and calling it anyway is refused without touching the database.
    assert tools == ["ask", "search_documents"], server.log_tail()
    assert data.isError and "no access to the company data" in _text(data)

    # `ask` is the full turn: routed to the support documents, answered by the LLM with its source.
    assert not answer.isError, _text(answer)
    body = answer.structuredContent
    assert body is not None and body["intent"] == "docs"
    assert "24" in body["answer"], body["answer"]
    assert [s["source"] for s in body["sources"]] == ["warranty.md"]

    # Sources only, and only the public ones: the internal cost document never reaches a support key.
    assert not search.isError, _text(search)
    passages = json.loads(_text(search)) if search.structuredContent is None else search.structuredContent["result"]
    assert [p["source"] for p in passages] == ["warranty.md"]
    assert SECRET not in _text(search)

    # The analyst key has data access: its own SELECT runs through the guard on the read-only role,
    # and a write is refused by the guard.
    tools, (count, write) = asyncio.run(_session_calls(server.url, server.keys["analyst"], [
        ("query_data", {"sql": "SELECT count(*) AS n FROM orders"}),
        ("query_data", {"sql": "DELETE FROM orders"}),
    ]))
    assert tools == ["ask", "search_documents", "query_data"]
    assert not count.isError, _text(count)
    with psycopg.connect(demo_admin_url) as conn:
        row = conn.execute("SELECT count(*) FROM orders").fetchone()
    assert row is not None
    assert count.structuredContent is not None
    assert count.structuredContent["columns"] == ["n"] and count.structuredContent["rows"] == [[row[0]]]
    assert write.isError and "read-only" in _text(write), _text(write)


def test_mcp_refuses_a_request_without_a_valid_key(server: Server) -> None:
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    missing = httpx.post(server.url + "/mcp", json=initialize, headers=headers, timeout=30)
    wrong = httpx.post(server.url + "/mcp", json=initialize, headers={**headers, "X-API-Key": "rbk_wrong"},
                       timeout=30)
    good = httpx.post(server.url + "/mcp", json=initialize,
                      headers={**headers, "X-API-Key": server.keys["support"]}, timeout=30)
    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert missing.json()["error"] == "unauthorized"
    assert good.status_code == 200, good.text
