from __future__ import annotations

from rag_bot.documents.answer import prepare_answer
from rag_bot.embeddings import FastE5Embedder
from rag_bot.store import ChunkRecord, DocumentRecord, VectorStore


def _seed(store: VectorStore, embedder: FastE5Embedder) -> None:
    for source, text, audience in [
        ("returns.md", "A laptop can be returned within 14 calendar days of delivery.", "public"),
        ("leave.md", "Ежегодный оплачиваемый отпуск — 28 календарных дней.", "internal"),
    ]:
        doc = DocumentRecord(source=source, title=source, domain="x", audience=audience, language="en",
                             content_hash="h")
        store.upsert_document(doc, [ChunkRecord(text, 0)], embedder.embed_passages([text]))


def test_answer_puts_retrieved_passages_in_the_prompt_and_cites_them(
    store: VectorStore, embedder: FastE5Embedder
) -> None:
    _seed(store, embedder)
    prepared = prepare_answer("What is the return period for a laptop?", store=store, embedder=embedder, top_k=1)
    assert prepared.canned_reply is None
    assert [c.source for c in prepared.citations] == ["returns.md"]
    system, user = prepared.messages
    assert "ONLY" in system.content
    assert "[1] returns.md" in user.content and "14 calendar days" in user.content


def test_answer_uses_the_question_language(store: VectorStore, embedder: FastE5Embedder) -> None:
    _seed(store, embedder)
    prepared = prepare_answer("Сколько дней отпуска положено?", store=store, embedder=embedder, top_k=1)
    assert prepared.language == "ru"
    assert "Отвечай по-русски" in prepared.messages[0].content
    assert prepared.citations[0].source == "leave.md"


def test_the_language_given_by_the_turn_wins_over_the_searched_text(
    store: VectorStore, embedder: FastE5Embedder
) -> None:
    """A Russian follow-up is searched together with the English question before it, in Russian."""
    _seed(store, embedder)
    prepared = prepare_answer("What is the return period for a laptop? а для мониторов?", store=store,
                              embedder=embedder, top_k=1, language="ru")
    assert prepared.language == "ru" and "Отвечай по-русски" in prepared.messages[0].content


def test_the_routers_embedding_is_used_instead_of_embedding_again(
    store: VectorStore, embedder: FastE5Embedder
) -> None:
    _seed(store, embedder)
    vacation = embedder.embed_queries(["Сколько дней отпуска положено?"])[0]
    # The text says laptops, the given vector says vacation: the vector decides the vector half.
    prepared = prepare_answer("zzz", store=store, embedder=embedder, top_k=1, embedding=vacation)
    assert prepared.citations[0].source == "leave.md"


def test_nothing_visible_means_a_canned_reply_without_the_llm(store: VectorStore, embedder: FastE5Embedder) -> None:
    doc = DocumentRecord(source="secret.md", title="s", domain="hr", audience="internal", language="en",
                         content_hash="h")
    store.upsert_document(doc, [ChunkRecord("bonus is 3 % of margin", 0)], embedder.embed_passages(["bonus"]))
    prepared = prepare_answer("What is the bonus?", store=store, embedder=embedder, audience="public")
    assert prepared.citations == [] and prepared.messages == []
    assert prepared.canned_reply is not None and "could not find" in prepared.canned_reply
