"""Retriever: question -> the best chunks the user may see, packed into a token budget, with citations.

Audience and domain filters run inside SQL (a public asker can never receive an internal chunk);
ranking is the store's hybrid HNSW + Russian full-text search fused by weighted reciprocal rank,
with knobs in `RetrievalOptions`; an optional `Reranker` reorders the fused candidates. A short
follow-up is searched together with the previous question (rag_bot.assistant.respond).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from rag_bot.embeddings import Embedder
from rag_bot.prompts import detect_language
from rag_bot.store import SearchHit, SearchQuery, VectorStore

logger = logging.getLogger(__name__)

AUDIENCES_FOR = {"public": ("public",), "internal": ("public", "internal")}


@dataclass(frozen=True)
class Citation:
    """What the answer displays for a source: title, where it is, and the passage used."""

    number: int
    title: str
    source: str
    section: str
    page: int | None
    passage: str
    domain: str


def approx_tokens(text: str) -> int:
    # ~4 characters per token for English, ~3 for Russian: a conservative budget for both.
    return max(1, len(text) // 3)


@dataclass(frozen=True)
class RetrievalOptions:
    """Ranking knobs (defaults measured with `rag-bot eval docs`; see bench/results/eval_docs*.json).

    Args:
        candidates: rows each of the vector and full-text searches contribute before fusion.
        rrf_k: reciprocal-rank constant; smaller trusts the top ranks more.
        vector_weight: weight of the vector ranking in the fusion.
        text_weight: weight of the full-text ranking (0 = pure vector search).
        rerank_candidates: how many fused hits a reranker sees (only when one is given).
        text_scope: "candidates" (full text re-ranks the vector candidates; latency bounded, see
            bench/results/retrieval_latency.md) or "all" (full text searches every allowed chunk).
    """

    # Dense ranking leads; full text breaks near-ties (names, numbers, exact terms) among the
    # vector candidates. Measured on the XQuAD and demo-KB dev sets (eval_docs_*.json): equal
    # weights at k=60 over all chunks cost 4-5 points of recall@1 against vector-only search;
    # 0.2 at k=10 over the candidates gains 0.5-2 points of recall@1 and keeps recall@5/10 within
    # one question, and keeps p50 near 10-20 ms at 100k chunks (retrieval_latency.md).
    candidates: int = 40
    rrf_k: int = 10
    vector_weight: float = 1.0
    text_weight: float = 0.2
    rerank_candidates: int = 20
    text_scope: Literal["all", "candidates"] = "candidates"
    # Full text ranks only chunks in the question's language (see SearchQuery.language); measured on
    # XQuAD dev across languages in docs/EVALUATION.md.
    text_same_language: bool = True


class Reranker(Protocol):
    """Reorders candidate hits for a question (e.g. a cross-encoder); returns them best first."""

    def rerank(self, question: str, hits: Sequence[SearchHit]) -> list[SearchHit]: ...


def search_chunks(
    question: str,
    *,
    store: VectorStore,
    embedder: Embedder,
    audience: str = "internal",
    domains: Sequence[str] | None = None,
    top_k: int = 5,
    options: RetrievalOptions | None = None,
    embedding: np.ndarray | None = None,
    reranker: Reranker | None = None,
) -> list[SearchHit]:
    """Hybrid search restricted, inside SQL, to the audience's documents and the given domains.

    `embedding`: the question's query embedding when the caller has it already (the router's).
    """
    opts = options or RetrievalOptions()
    if embedding is None:
        embedding = embedder.embed_queries([question])[0]
    query = SearchQuery(
        text=question,
        embedding=embedding,
        audiences=AUDIENCES_FOR[audience],
        domains=list(domains) if domains else None,
        top_k=max(top_k, opts.rerank_candidates) if reranker else top_k,
        candidates=max(opts.candidates, top_k),
        rrf_k=opts.rrf_k,
        vector_weight=opts.vector_weight,
        text_weight=opts.text_weight,
        text_scope=opts.text_scope,
        language=detect_language(question) if opts.text_same_language else None,
    )
    hits = store.search(query)
    if reranker is not None and hits:
        hits = reranker.rerank(question, hits)
    return hits[:top_k]


def pack_context(hits: Sequence[SearchHit], budget_tokens: int) -> list[Citation]:
    """Keep the best hits within the budget; adjacent chunks of one document become one passage.

    A hit that does not fit is skipped (a smaller, lower-ranked one may still fit); the best hit is
    always kept, so an oversized first chunk still gives the answer a source. Citations are
    numbered in rank order of their best chunk.
    """
    kept: list[SearchHit] = []
    used = 0
    seen: set[int] = set()
    for hit in hits:
        if hit.chunk_id in seen:
            continue
        cost = approx_tokens(hit.text)
        if kept and used + cost > budget_tokens:
            continue
        kept.append(hit)
        seen.add(hit.chunk_id)
        used += cost
    groups: list[list[SearchHit]] = []
    for hit in kept:
        for group in groups:
            if group[0].source == hit.source and any(abs(h.ordinal - hit.ordinal) == 1 for h in group):
                group.append(hit)
                break
        else:
            groups.append([hit])
    citations = []
    # Overlapping chunks (the chunker's overlap) would repeat text when merged: drop the repeat.
    for number, group in enumerate(groups, 1):
        group.sort(key=lambda h: h.ordinal)
        first = group[0]
        citations.append(
            Citation(
                number=number,
                title=first.title,
                source=first.source,
                section=first.heading,
                page=first.page,
                passage=_merge_texts([h.text for h in group]),
                domain=first.domain,
            )
        )
    return citations


def _merge_texts(texts: Sequence[str]) -> str:
    """Join consecutive chunks, removing the overlap a chunk shares with the previous one."""
    merged = texts[0] if texts else ""
    for text in texts[1:]:
        overlap = 0
        for size in range(min(len(merged), len(text), 600), 20, -1):
            if merged.endswith(text[:size]):
                overlap = size
                break
        merged = merged + ("" if overlap else "\n") + text[overlap:]
    return merged


__all__ = [
    "AUDIENCES_FOR",
    "Citation",
    "Reranker",
    "RetrievalOptions",
    "pack_context",
    "search_chunks",
]
