"""Conversations in PostgreSQL: what a second replica needs to continue a conversation."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime
from decimal import Decimal

import psycopg
import pytest

from rag_bot.assistant.conversation import Conversation, Route, Turn
from rag_bot.assistant.sessions import append_turn, delete_conversation, load_conversation, save_conversation


def _route(intent: str = "sql", domains: tuple[str, ...] = ("sales",)) -> Route:
    import numpy as np

    return Route(intent=intent, domains=domains, intent_confidence=0.9, domain_confidence=0.8,  # type: ignore[arg-type]
                 path="fast", language="ru", sentiment=None, latency_s=0.01, embedding=np.ones(4, dtype=np.float32))


@pytest.fixture
def conn(fresh_db_url: str):  # type: ignore[no-untyped-def]
    with psycopg.connect(fresh_db_url, autocommit=True) as connection:
        yield connection


def test_turn_round_trips_without_embedding_and_with_json_safe_rows(conn: psycopg.Connection) -> None:
    turn = Turn("Выручка по регионам", _route(), "Центр: 10,5",
                data=("SELECT region, sum(x)", ["region", "revenue", "day", "at"],
                      [("Центр", Decimal("10.50"), date(2025, 3, 1), datetime(2025, 3, 1, 9, 30, tzinfo=UTC))]))
    append_turn(conn, "c1", "analyst", turn)

    loaded = load_conversation(conn, "c1", "analyst").turns
    assert len(loaded) == 1
    route = loaded[0].route
    assert route is not None and route.embedding is None
    assert (route.intent, route.domains, route.language, route.path) == ("sql", ("sales",), "ru", "fast")
    assert loaded[0].message == "Выручка по регионам" and loaded[0].answer == "Центр: 10,5"
    assert loaded[0].data == ("SELECT region, sum(x)", ["region", "revenue", "day", "at"],
                              [("Центр", 10.5, "2025-03-01", "2025-03-01T09:30:00+00:00")])
    assert load_conversation(conn, "c1", "analyst").last_route == route


def test_unknown_conversation_loads_empty(conn: psycopg.Connection) -> None:
    assert load_conversation(conn, "nope", "support").turns == []


def test_only_the_last_turns_are_kept(conn: psycopg.Connection) -> None:
    for i in range(5):
        append_turn(conn, "c2", "support", Turn(f"q{i}", None, f"a{i}"), keep=3)
    assert [t.message for t in load_conversation(conn, "c2", "support").turns] == ["q2", "q3", "q4"]

    conversation = Conversation([Turn(f"x{i}") for i in range(4)])
    save_conversation(conn, "c2", "support", conversation, keep=2)
    assert [t.message for t in load_conversation(conn, "c2", "support").turns] == ["x2", "x3"]


def test_a_conversation_never_crosses_profiles(conn: psycopg.Connection) -> None:
    append_turn(conn, "c3", "analyst", Turn("internal question", _route(), "internal answer"))
    assert load_conversation(conn, "c3", "support").turns == []
    append_turn(conn, "c3", "support", Turn("public question"))  # replaces, never appends to the analyst's turns
    assert [t.message for t in load_conversation(conn, "c3", "support").turns] == ["public question"]
    assert load_conversation(conn, "c3", "analyst").turns == []


def test_concurrent_appends_from_two_replicas_keep_every_turn(fresh_db_url: str) -> None:
    errors: list[BaseException] = []

    def replica(name: str) -> None:
        try:
            with psycopg.connect(fresh_db_url, autocommit=True) as own:
                for i in range(15):
                    append_turn(own, "shared", "support", Turn(f"{name}{i}"), keep=100)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=replica, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    with psycopg.connect(fresh_db_url) as check:
        messages = [t.message for t in load_conversation(check, "shared", "support").turns]
    assert sorted(messages) == sorted([f"a{i}" for i in range(15)] + [f"b{i}" for i in range(15)])
    assert [m for m in messages if m.startswith("a")] == [f"a{i}" for i in range(15)]  # order kept per replica


def test_writes_on_a_transactional_connection_are_committed(fresh_db_url: str) -> None:
    with psycopg.connect(fresh_db_url) as writer:  # autocommit off
        assert load_conversation(writer, "c4", "support").turns == []
        append_turn(writer, "c4", "support", Turn("hello"))
        assert writer.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with psycopg.connect(fresh_db_url, autocommit=True) as reader:
            assert [t.message for t in load_conversation(reader, "c4", "support").turns] == ["hello"]
            assert delete_conversation(writer, "c4") is True
            assert load_conversation(reader, "c4", "support").turns == []
