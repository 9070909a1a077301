"""Retriever: question -> the best chunks the user may see, packed into a token budget, with citations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rag_bot.embeddings import Embedder
from rag_bot.store import SearchHit, SearchQuery, VectorStore

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


def search_chunks(
    question: str,
    *,
    store: VectorStore,
    embedder: Embedder,
    audience: str = "internal",
    domains: Sequence[str] | None = None,
    top_k: int = 5,
) -> list[SearchHit]:
    """Hybrid search restricted, inside SQL, to the audience's documents and the given domains."""
    embedding = embedder.embed_queries([question])[0]
    query = SearchQuery(
        text=question,
        embedding=embedding,
        audiences=AUDIENCES_FOR[audience],
        domains=domains,
        top_k=top_k,
    )
    return store.search(query)


def pack_context(hits: Sequence[SearchHit], budget_tokens: int) -> list[Citation]:
    """Keep the best hits within the budget; adjacent chunks of one document become one passage."""
    kept: list[SearchHit] = []
    used = 0
    for hit in hits:
        cost = approx_tokens(hit.text)
        if kept and used + cost > budget_tokens:
            break
        kept.append(hit)
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
                passage="\n".join(h.text for h in group),
                domain=first.domain,
            )
        )
    return citations
