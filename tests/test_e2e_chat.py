"""End to end: real Postgres + pgvector, real embeddings, a real LLM server, the demo documents, and the
turn runner every channel uses (router included)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from ingest.pipeline import sync_documents
from rag_bot.assistant.respond import Services
from rag_bot.assistant.routing import Router
from rag_bot.assistant.turn import TurnResult, TurnRunner
from rag_bot.embeddings import FastE5Embedder
from rag_bot.llm.openai_compat import OpenAICompatClient
from rag_bot.profiles import get_profiles
from rag_bot.store import VectorStore

pytestmark = [pytest.mark.e2e, pytest.mark.llm, pytest.mark.slow]


@pytest.fixture
def demo_store(store: VectorStore, embedder: FastE5Embedder) -> VectorStore:
    for domain in ("support", "hr"):
        report = sync_documents(REPO / "knowledge_base" / "docs" / domain, store, embedder)
        assert report.added, f"no documents ingested from {domain}: {report.failed}"
    return store


def _ask(question: str, llm: OpenAICompatClient, store: VectorStore, embedder: FastE5Embedder) -> TurnResult:
    """One turn of the analyst profile, as the chat, the API and `rag-bot ask` run it."""
    config = get_profiles()
    services = Services(llm=llm, store=store, embedder=embedder,
                        router=Router(config, config.profile("analyst"), embedder, llm=llm))
    runner = TurnRunner(config, lambda _name: services)
    return asyncio.run(runner.answer(question, profile="analyst", channel="test"))


@pytest.mark.parametrize(
    ("question", "expected_doc", "expected_fact"),
    [
        ("What is the return period for a laptop?", "returns-policy", "14"),
        ("Сколько дней отпуска положено сотруднику?", "leave", "28"),
    ],
)
def test_chat_answers_from_the_right_document_with_a_citation(
    demo_store: VectorStore, embedder: FastE5Embedder, llamacpp_server: str,
    question: str, expected_doc: str, expected_fact: str,
) -> None:
    llm = OpenAICompatClient(llamacpp_server, "ci-model", timeout_s=120, max_tokens=160)
    result = _ask(question, llm, demo_store, embedder)
    assert result.reply.route.intent == "docs", result.reply.route
    cited = [Path(c.source).stem for c in result.reply.citations]
    assert any(expected_doc in name for name in cited), cited
    assert expected_fact in result.text, result.text


def test_dead_llm_gives_a_clear_message_and_the_next_question_recovers(
    demo_store: VectorStore, embedder: FastE5Embedder, llamacpp_server: str
) -> None:
    from conftest import free_port

    from rag_bot.errors import LLMUnavailable

    dead = OpenAICompatClient(f"http://127.0.0.1:{free_port()}/v1", "ci-model", max_retries=0)
    with pytest.raises(LLMUnavailable, match="not answering"):
        _ask("What is the return period for a laptop?", dead, demo_store, embedder)
    alive = OpenAICompatClient(llamacpp_server, "ci-model", max_tokens=64)
    assert _ask("When is customer support available?", alive, demo_store, embedder).text.strip()


def test_cli_ask_prints_answer_and_sources(tmp_path: Path, fresh_db_url: str, llamacpp_server: str) -> None:
    env = {
        "RAG_BOT_DATABASE_URL": fresh_db_url,
        "RAG_BOT_LLM_BASE_URL": llamacpp_server,
        "RAG_BOT_LLM_MODEL": "ci-model",
        "RAG_BOT_LLM_MAX_TOKENS": "120",
        "RAG_BOT_STATE_DIR": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    docs = REPO / "knowledge_base" / "docs" / "support"
    ingest = subprocess.run([sys.executable, "-m", "rag_bot", "ingest", "docs", str(docs)], env=env,
                            capture_output=True, text=True, timeout=600)
    assert ingest.returncode == 0, ingest.stderr
    assert "failed 0" in ingest.stdout
    ask = subprocess.run([sys.executable, "-m", "rag_bot", "ask", "What is the return period for a laptop?"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert ask.returncode == 0, ask.stderr
    assert "Sources:" in ask.stdout and "returns-policy" in ask.stdout
