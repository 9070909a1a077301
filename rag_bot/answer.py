"""Orchestration: a question -> retrieve -> prompt -> the LLM's answer with its sources.

The steps are split so the chat UI can stream: `prepare_answer` does retrieval and builds the prompt
(blocking work, run in a thread), then the caller streams `llm.astream(prepared.messages)`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from rag_bot import prompts
from rag_bot.embeddings import Embedder
from rag_bot.language import detect_language
from rag_bot.llm.base import ChatMessage, LLMClient
from rag_bot.retrieval import Citation, Reranker, pack_context, search_chunks
from rag_bot.store import VectorStore

logger = logging.getLogger(__name__)


@dataclass
class PreparedAnswer:
    question: str
    language: str
    citations: list[Citation]
    messages: list[ChatMessage]
    # A reply that needs no LLM (e.g. nothing found); when set, `messages` is empty.
    canned_reply: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class Answer:
    text: str
    citations: list[Citation]
    language: str
    timings: dict[str, float] = field(default_factory=dict)


def build_messages(question: str, citations: Sequence[Citation], language: str,
                   system: Mapping[str, str] | None = None) -> list[ChatMessage]:
    """The document-answer prompt; `system` (per language) is a profile's own instructions."""
    context = "\n\n".join(
        f"[{c.number}] {c.title}{' — ' + c.section if c.section else ''}\n{c.passage}" for c in citations
    )
    return [
        ChatMessage("system", (system or prompts.DOCS_SYSTEM).get(language) or prompts.DOCS_SYSTEM[language]),
        ChatMessage("user", prompts.DOCS_USER[language].format(context=context, question=question)),
    ]


def prepare_answer(
    question: str,
    *,
    store: VectorStore,
    embedder: Embedder,
    audience: str = "internal",
    domains: Sequence[str] | None = None,
    top_k: int = 5,
    budget_tokens: int = 1800,
    language: str | None = None,
    reranker: Reranker | None = None,
    system: Mapping[str, str] | None = None,
) -> PreparedAnswer:
    """Retrieve what the user may see and build the prompt (in `language`, else the question's);
    `system` is the profile's system prompt per language (default: prompts.DOCS_SYSTEM)."""
    language = language or detect_language(question)
    started = time.perf_counter()
    hits = search_chunks(question, store=store, embedder=embedder, audience=audience, domains=domains, top_k=top_k,
                         reranker=reranker)
    citations = pack_context(hits, budget_tokens)
    timings = {"retrieve_s": time.perf_counter() - started}
    if not citations:
        return PreparedAnswer(question, language, [], [], prompts.text("no_sources", language), timings)
    return PreparedAnswer(question, language, citations, build_messages(question, citations, language, system), None,
                          timings)


def stream_answer(prepared: PreparedAnswer, llm: LLMClient) -> Iterator[str]:
    """The answer's text as it is generated (the canned reply when retrieval found nothing)."""
    if prepared.canned_reply is not None:
        yield prepared.canned_reply
        return
    yield from llm.stream(prepared.messages)


def answer_question(
    question: str,
    *,
    llm: LLMClient,
    store: VectorStore,
    embedder: Embedder,
    audience: str = "internal",
    domains: Sequence[str] | None = None,
    top_k: int = 5,
    budget_tokens: int = 1800,
) -> Answer:
    """One whole answer (CLI, API, evaluation)."""
    prepared = prepare_answer(
        question, store=store, embedder=embedder, audience=audience, domains=domains, top_k=top_k,
        budget_tokens=budget_tokens,
    )
    started = time.perf_counter()
    text = "".join(stream_answer(prepared, llm))
    prepared.timings["generate_s"] = time.perf_counter() - started
    logger.info("answered lang=%s sources=%d timings=%s", prepared.language, len(prepared.citations), prepared.timings)
    return Answer(text=text, citations=prepared.citations, language=prepared.language, timings=prepared.timings)
