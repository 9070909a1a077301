"""Chat history on a real PostgreSQL: Chainlit's tables, the SQLAlchemy data layer, feedback, resume."""

# ruff: noqa: F811  (pytest fixtures imported by name from chat_fixtures)

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
from chainlit.context import init_http_context
from chainlit.element import Image, Text
from chainlit.types import Pagination, ThreadFilter
from chat_fixtures import SCHEMA, chat_db, run, step, store_rated_thread  # noqa: F401

from rag_bot.analytics.schema_context import EXAMPLE_KIND
from rag_bot.embeddings import FastE5Embedder
from rag_bot.store import SearchQuery, VectorStore
from rag_bot.ui.chat_history import AnswerMeta, add_rated_example, conversation_from_steps, migrate_chat_history
from rag_bot.ui.data_layer import ChatDataLayer

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000" "1f15c4890000000d49444154789c6360000002000100"
    "05fe02fea7d6a4a00000000049454e44ae426082"
)


def test_chat_tables_are_created_idempotently(fresh_db_url: str) -> None:
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        migrate_chat_history(conn, SCHEMA)
        migrate_chat_history(conn, SCHEMA)
        tables = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (SCHEMA,))}
        columns = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = 'steps'",
            (SCHEMA,))}
    assert tables == {"users", "threads", "steps", "elements", "feedbacks", "element_files"}
    assert {"autoCollapse", "modes", "defaultOpen", "command"} <= columns


def test_thread_steps_elements_and_feedback_roundtrip_through_the_data_layer(chat_db: str) -> None:
    async def scenario() -> None:
        layer = ChatDataLayer(chat_db, schema=SCHEMA)
        try:
            meta = AnswerMeta(question="Сколько дней отпуска?", profile="analyst", intent="docs", domains=["hr"],
                              language="ru", answer="28 дней [1].",
                              prompt=[{"role": "system", "content": "sys"}, {"role": "user", "content": "q"}])
            thread_id, (answer_id,) = await store_rated_thread(layer, "olga", [(meta.question, meta, 1)])
            chart = Image(content=PNG, name="chart.png", display="inline", mime="image/png", thread_id=thread_id)
            chart.for_id = answer_id
            await layer.create_element(chart)
            source = Text(content="Отпуск — 28 дней.", name="[1] Отпуск", display="side", thread_id=thread_id)
            source.for_id, source.mime = answer_id, "text/plain"
            await layer.create_element(source)

            thread = await layer.get_thread(thread_id)
            assert thread is not None and thread["userIdentifier"] == "olga"
            answer = next(s for s in thread["steps"] if s["id"] == answer_id)
            turn = next(s for s in thread["steps"] if s["id"] == answer["parentId"])  # the UI rates the turn
            assert turn["type"] == "run" and turn["feedback"] is not None and turn["feedback"]["value"] == 1
            assert turn["feedback"]["comment"] == "ok"
            assert AnswerMeta.from_metadata(answer["metadata"]) == meta
            urls = {e["name"]: e["url"] for e in thread["elements"]}
            assert urls["chart.png"].startswith("data:image/png;base64,")
            assert urls["[1] Отпуск"].startswith("data:text/plain;charset=utf-8;base64,")

            user = await layer.get_user("olga")
            assert user is not None and user.metadata == {"profiles": ["analyst"]}
            listed = await layer.list_threads(Pagination(first=20), ThreadFilter(userId=user.id))
            assert [t["id"] for t in listed.data] == [thread_id]
            assert listed.data[0]["elements"] == []  # the sidebar needs no chart bytes

            await layer.delete_thread(thread_id)
            assert await layer.get_thread(thread_id) is None
            files = await layer.execute_sql("SELECT count(*) AS n FROM element_files", {})
            assert files == [{"n": 0}]
        finally:
            await layer.close()

    run(scenario)


def test_anonymous_threads_persist_without_a_user(chat_db: str) -> None:
    """With sign-in off there is no user; steps still persist and nothing fails."""

    async def scenario() -> None:
        layer = ChatDataLayer(chat_db, schema=SCHEMA)
        try:
            init_http_context()
            thread_id = str(uuid.uuid4())
            await layer.create_step(step(thread_id, "user_message", "hello", "2025-01-01T10:00:00Z"))
            thread = await layer.get_thread(thread_id)
            assert thread is not None and thread["userId"] is None
            assert [s["output"] for s in thread["steps"]] == ["hello"]
        finally:
            await layer.close()

    run(scenario)


def test_resumed_thread_rebuilds_the_conversation_with_routes(chat_db: str) -> None:
    async def scenario() -> dict[str, Any] | None:
        layer = ChatDataLayer(chat_db, schema=SCHEMA)
        try:
            first = AnswerMeta(question="Выручка по регионам за 2024", profile="analyst", intent="sql",
                               domains=["sales"], language="ru", answer="Центр: 10 млн", sql="SELECT 1", sql_ok=True)
            second = AnswerMeta(question="а за 2023?", profile="analyst", intent="sql", domains=["sales"],
                                language="ru", answer="Центр: 8 млн", sql="SELECT 2", sql_ok=True)
            thread_id, _ = await store_rated_thread(
                layer, "olga", [(first.question, first, None), (second.question, second, None)])
            return await layer.get_thread(thread_id)
        finally:
            await layer.close()

    thread = run(scenario)
    assert thread is not None
    conversation = conversation_from_steps(thread["steps"])
    assert [t.message for t in conversation.turns] == ["Выручка по регионам за 2024", "а за 2023?"]
    assert conversation.last_route is not None and conversation.last_route.domains == ("sales",)
    assert conversation.turns[-1].answer == "Центр: 8 млн"


def test_steps_without_metadata_pair_user_messages_with_answers() -> None:
    steps = [
        {"type": "user_message", "output": "hi", "createdAt": "1"},
        {"type": "run", "output": "", "createdAt": "2"},
        {"type": "assistant_message", "output": "Hello!", "createdAt": "3", "metadata": {}},
    ]
    conversation = conversation_from_steps(steps)
    assert [(t.message, t.answer, t.route) for t in conversation.turns] == [("hi", "Hello!", None)]


def test_resume_leaves_out_answers_given_under_another_profile() -> None:
    internal = AnswerMeta(question="Бонус продавцов?", profile="analyst", intent="docs", domains=["hr"], language="ru")
    public = AnswerMeta(question="Сроки доставки?", profile="support", intent="docs", language="ru")
    steps = [
        {"type": "assistant_message", "output": "3 %", "createdAt": "1", "metadata": internal.to_metadata()},
        {"type": "assistant_message", "output": "2 дня", "createdAt": "2", "metadata": public.to_metadata()},
    ]
    assert [t.message for t in conversation_from_steps(steps, profile="support").turns] == ["Сроки доставки?"]


def test_thumbs_up_on_a_data_answer_stores_a_solved_example(chat_db: str, store: VectorStore,
                                                            embedder: FastE5Embedder) -> None:
    stored: list[str | None] = []

    async def on_thumbs_up(meta: AnswerMeta) -> None:
        stored.append(await asyncio.to_thread(add_rated_example, meta, store, embedder))

    question = "Сколько заказов отгрузили в феврале 2025?"
    sql = "SELECT count(*) FROM orders WHERE shipped_at >= '2025-02-01' AND shipped_at < '2025-03-01'"
    ran = AnswerMeta(question=question, profile="analyst", intent="sql", domains=["sales"], language="ru",
                     answer="1 234 заказа", sql=sql, sql_ok=True)
    failed = AnswerMeta(question="Сколько возвратов?", profile="analyst", intent="sql", language="ru",
                        answer="Не удалось", sql="SELECT broken", sql_ok=False)
    disliked = AnswerMeta(question="Средний чек?", profile="analyst", intent="sql", language="ru",
                          answer="100", sql="SELECT avg(total) FROM orders", sql_ok=True)

    async def scenario() -> None:
        layer = ChatDataLayer(chat_db, schema=SCHEMA, on_thumbs_up=on_thumbs_up)
        try:
            await store_rated_thread(layer, "olga", [(ran.question, ran, 1), (failed.question, failed, 1),
                                                     (disliked.question, disliked, 0)])
        finally:
            await layer.close()

    run(scenario)
    assert len(stored) == 1 and stored[0] is not None
    rows = store.conn.execute("SELECT source, title FROM documents WHERE kind = %s", (EXAMPLE_KIND,)).fetchall()
    assert rows == [(stored[0], question)]
    vector = embedder.embed_queries(["сколько заказов было отгружено в марте 2025"])[0]
    hits = store.search(SearchQuery(text="заказов отгружено", embedding=vector, audiences=("internal",),
                                    kinds=(EXAMPLE_KIND,), top_k=1))
    assert hits and sql in hits[0].text
