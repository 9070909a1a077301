"""The docs answer: a question -> retrieve -> the prompt with its sources -> the LLM's streamed text.

Split in two so every channel can stream: `prepare_answer` does retrieval and builds the prompt
(blocking work, run in a thread by the turn runner), then the turn streams `prepared.messages`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from rag_bot import prompts
from rag_bot.documents.retrieval import Citation, Reranker, pack_context, search_chunks
from rag_bot.embeddings import Embedder
from rag_bot.llm.base import ChatMessage
from rag_bot.prompts import detect_language
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
    embedding: np.ndarray | None = None,
    system: Mapping[str, str] | None = None,
) -> PreparedAnswer:
    """Retrieve what the user may see and build the prompt (in `language`, else the question's).

    `embedding`: the question's query embedding when the router has it already (one per turn);
    `system`: the profile's system prompt per language (default: prompts.DOCS_SYSTEM).
    """
    language = language or detect_language(question)
    started = time.perf_counter()
    hits = search_chunks(question, store=store, embedder=embedder, audience=audience, domains=domains, top_k=top_k,
                         reranker=reranker, embedding=embedding)
    citations = pack_context(hits, budget_tokens)
    timings = {"retrieve_s": time.perf_counter() - started}
    if not citations:
        return PreparedAnswer(question, language, [], [], prompts.text("no_sources", language), timings)
    return PreparedAnswer(question, language, citations, build_messages(question, citations, language, system), None,
                          timings)
