from __future__ import annotations

import numpy as np
import pytest

from rag_bot.documents.retrieval import search_chunks
from rag_bot.embeddings import FastE5Embedder
from rag_bot.errors import EmbeddingError
from rag_bot.store import ChunkRecord, DocumentRecord, VectorStore


def _add(store: VectorStore, embedder: FastE5Embedder, source: str, texts: list[str], *, domain: str = "support",
         audience: str = "public", content_hash: str = "h1") -> None:
    doc = DocumentRecord(source=source, title=source, domain=domain, audience=audience, language="en",
                         content_hash=content_hash)
    chunks = [ChunkRecord(text=t, ordinal=i) for i, t in enumerate(texts)]
    store.upsert_document(doc, chunks, embedder.embed_passages(texts))


def test_search_finds_the_relevant_chunk_across_languages(store: VectorStore, embedder: FastE5Embedder) -> None:
    _add(store, embedder, "returns.md", ["A laptop can be returned within 14 calendar days of delivery."])
    _add(store, embedder, "leave.md", ["Сотрудникам положено 28 календарных дней ежегодного отпуска."],
         domain="hr", audience="internal")
    hits = search_chunks("Сколько дней отпуска у сотрудника?", store=store, embedder=embedder, audience="internal")
    assert hits[0].source == "leave.md"
    hits = search_chunks("laptop return period", store=store, embedder=embedder, audience="internal")
    assert hits[0].source == "returns.md"


def test_public_audience_never_receives_internal_chunks(store: VectorStore, embedder: FastE5Embedder) -> None:
    _add(store, embedder, "salaries.md", ["Salary is paid on the 10th and 25th of each month."],
         domain="hr", audience="internal")
    _add(store, embedder, "hours.md", ["Support works Monday to Friday, 09:00-19:00 Moscow time."])
    hits = search_chunks("When is salary paid?", store=store, embedder=embedder, audience="public", top_k=10)
    assert hits, "the public document must still be found"
    assert all(h.audience == "public" for h in hits)
    internal = search_chunks("When is salary paid?", store=store, embedder=embedder, audience="internal")
    assert internal[0].source == "salaries.md"


def test_domain_filter_is_applied_in_sql(store: VectorStore, embedder: FastE5Embedder) -> None:
    _add(store, embedder, "hr.md", ["Leave is 28 calendar days."], domain="hr", audience="internal")
    _add(store, embedder, "it.md", ["VPN access is requested through the IT portal."], domain="it", audience="internal")
    hits = search_chunks("leave days", store=store, embedder=embedder, domains=["it"], top_k=10)
    assert [h.domain for h in hits] == ["it"]


def test_upsert_replaces_exactly_the_old_chunks(store: VectorStore, embedder: FastE5Embedder) -> None:
    _add(store, embedder, "a.md", ["one", "two", "three"])
    _add(store, embedder, "b.md", ["other document"])
    assert store.count_chunks() == 4
    _add(store, embedder, "a.md", ["only one now"], content_hash="h2")
    assert store.count_chunks() == 2
    assert store.document_hashes()["a.md"] == "h2"
    assert store.delete_documents(["a.md"]) == 1
    assert store.count_chunks() == 1


def test_batch_upsert_writes_each_document_and_its_chunk_fields(store: VectorStore) -> None:
    def doc(source: str, content_hash: str) -> DocumentRecord:
        return DocumentRecord(source=source, title=source.upper(), domain="it", audience="internal", language="ru",
                              content_hash=content_hash, metadata={"pages": 2})

    vectors = np.eye(3, 384, dtype=np.float32)
    store.upsert_documents([
        (doc("a.pdf", "h1"), [ChunkRecord("первая страница", 0, heading="Введение", page=1)], vectors[:1]),
        (doc("b.pdf", "h1"), [ChunkRecord("b0", 0), ChunkRecord("b1", 1)], vectors[1:]),
        (doc("a.pdf", "h2"), [ChunkRecord("вторая версия", 0, heading="Итоги", page=2)], vectors[:1]),  # last wins
    ])
    assert store.document_hashes() == {"a.pdf": "h2", "b.pdf": "h1"}
    rows = store.conn.execute(
        "SELECT d.source, d.title, c.ordinal, c.text, c.heading, c.page, c.domain, c.audience FROM chunks c "
        "JOIN documents d ON d.id = c.document_id ORDER BY d.source, c.ordinal"
    ).fetchall()
    assert rows == [
        ("a.pdf", "A.PDF", 0, "вторая версия", "Итоги", 2, "it", "internal"),
        ("b.pdf", "B.PDF", 0, "b0", "", None, "it", "internal"),
        ("b.pdf", "B.PDF", 1, "b1", "", None, "it", "internal"),
    ]
    stored = store.conn.execute("SELECT embedding::real[] FROM chunks c JOIN documents d ON d.id = c.document_id "
                                "WHERE d.source = 'b.pdf' ORDER BY c.ordinal").fetchall()
    assert np.array_equal(np.array([r[0] for r in stored], dtype=np.float32), vectors[1:])


def test_store_refuses_a_different_embedding_model(fresh_db_url: str, store: VectorStore) -> None:
    other = VectorStore(fresh_db_url, embedder_name="another-model", dim=768)
    with pytest.raises(EmbeddingError, match="--reembed"):
        other.migrate()


def test_upsert_rejects_mismatched_embeddings(store: VectorStore) -> None:
    doc = DocumentRecord(source="x", title="x", domain="d", audience="public", language="en", content_hash="h")
    with pytest.raises(ValueError):
        store.upsert_document(doc, [ChunkRecord("a", 0), ChunkRecord("b", 1)], np.zeros((1, 384), np.float32))


def _has_vector_index(store: VectorStore) -> bool:
    return store.conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_indexes WHERE tablename = 'chunks' AND indexname = 'chunks_embedding_hnsw')"
    ).fetchone()[0]


def test_bulk_load_into_an_empty_store_builds_the_vector_index_once_at_the_end(
    store: VectorStore, embedder: FastE5Embedder
) -> None:
    with store.bulk_load() as deferred:
        assert deferred and not _has_vector_index(store)
        _add(store, embedder, "returns.md", ["Возврат товара возможен в течение 14 дней."])
    assert _has_vector_index(store)
    with store.conn.transaction():  # one row: the planner would rather scan, unless told not to
        store.conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(row[0] for row in store.conn.execute(
            "EXPLAIN SELECT id FROM chunks ORDER BY embedding <=> %s LIMIT 5", (np.ones(384, dtype=np.float32),)
        ).fetchall())
    assert "chunks_embedding_hnsw" in plan
    # A store that already holds chunks keeps its index while more are written.
    with store.bulk_load() as deferred:
        assert not deferred and _has_vector_index(store)


def test_bulk_load_that_fails_midway_still_leaves_the_vector_index(store: VectorStore) -> None:
    with pytest.raises(RuntimeError), store.bulk_load():
        raise RuntimeError("interrupted")
    assert _has_vector_index(store)
