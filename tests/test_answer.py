from __future__ import annotations

from rag_bot.answer import answer_question
from rag_bot.embeddings import FastE5Embedder
from rag_bot.llm.fake import FakeLLM
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
    llm = FakeLLM(["Within 14 days [1]."])
    result = answer_question("What is the return period for a laptop?", llm=llm, store=store, embedder=embedder,
                             top_k=1)
    assert result.text == "Within 14 days [1]."
    assert [c.source for c in result.citations] == ["returns.md"]
    system, user = llm.received[0]
    assert "ONLY" in system.content
    assert "[1] returns.md" in user.content and "14 calendar days" in user.content


def test_answer_uses_the_question_language(store: VectorStore, embedder: FastE5Embedder) -> None:
    _seed(store, embedder)
    llm = FakeLLM(["28 дней [1]."])
    result = answer_question("Сколько дней отпуска положено?", llm=llm, store=store, embedder=embedder, top_k=1)
    assert result.language == "ru"
    assert "Отвечай по-русски" in llm.received[0][0].content
    assert result.citations[0].source == "leave.md"


def test_nothing_visible_means_a_canned_reply_without_the_llm(store: VectorStore, embedder: FastE5Embedder) -> None:
    doc = DocumentRecord(source="secret.md", title="s", domain="hr", audience="internal", language="en",
                         content_hash="h")
    store.upsert_document(doc, [ChunkRecord("bonus is 3 % of margin", 0)], embedder.embed_passages(["bonus"]))
    llm = FakeLLM()
    result = answer_question("What is the bonus?", llm=llm, store=store, embedder=embedder, audience="public")
    assert result.citations == [] and llm.received == []
    assert "could not find" in result.text
