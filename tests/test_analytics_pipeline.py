"""The analytics path with a scripted LLM on the real demo database: prompt layout, repairs, periods.

What a real model writes is measured by `rag-bot eval sql`; these tests pin the mechanics around it.
"""

# ruff: noqa: F811  (pytest fixtures imported by name from analytics_fixtures)

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from analytics_fixtures import demo_admin_url, demo_db, demo_schema_store, sql_runner  # noqa: F401

from ingest.db_schema import sync_schema, sync_schema_notes
from rag_bot.analytics.pipeline import AnalyticsOptions, answer_analytics
from rag_bot.analytics.schema_context import add_solved_example, retrieve_schema_context
from rag_bot.analytics.sql_generation import annotate_periods, build_messages, period_hints
from rag_bot.analytics.sql_runner import PostgresSqlRunner
from rag_bot.demo.load import DemoLoadReport
from rag_bot.embeddings import Embedder
from rag_bot.llm.fake import FakeLLM
from rag_bot.store import VectorStore

NOTES = Path(__file__).resolve().parents[1] / "knowledge_base" / "db" / "README.md"
TODAY = date(2025, 12, 31)
NO_EXTRAS = AnalyticsOptions(narrate=False, explain=False, examples=0)


@pytest.fixture(scope="module")
def schema_store(pg_admin_url: str, demo_db: DemoLoadReport, embedder: Embedder) -> Iterator[VectorStore]:
    store = demo_schema_store(pg_admin_url, demo_db, embedder, "pipeline_")
    sync_schema_notes(NOTES, store, embedder, database="demo")
    yield store
    store.close()


def _sql(sql: str, status: str = "answerable") -> str:
    return json.dumps({"status": status, "sql": sql})


def test_small_schema_is_shown_whole_in_the_same_order_for_every_question(
    schema_store: VectorStore, embedder: Embedder
) -> None:
    first = retrieve_schema_context("top 5 customers by revenue in 2024", store=schema_store, embedder=embedder)
    second = retrieve_schema_context("сколько открытых обращений в поддержку", store=schema_store, embedder=embedder)
    assert first.table_names == sorted(first.tables_in_scope) == second.table_names
    assert len(first.table_names) == 14
    # The system prompt (rules, periods, schema, definitions) is identical, so a prefix cache reuses it.
    a = build_messages("q1", first, today=TODAY, constrained=True, gate=True)
    b = build_messages("q2", second, today=TODAY, constrained=True, gate=True)
    assert a[0].content == b[0].content and "Revenue (выручка)" in a[0].content
    assert "{{" not in a[0].content  # the format line is literal JSON


def test_large_schema_is_pruned_to_ranked_tables_and_the_tables_definitions_use(
    schema_store: VectorStore, embedder: Embedder
) -> None:
    context = retrieve_schema_context("top 5 customers by revenue in 2024", store=schema_store, embedder=embedder,
                                      char_budget=4000, max_tables=3)
    names = context.table_names
    assert 1 <= len(names) < 14 and names == sorted(names)
    assert sum(len(t.text) for t in context.tables) <= 4000 or len(names) == 1
    assert "customers" in names or "orders" in names


def test_notes_of_another_database_are_never_shown(
    schema_store: VectorStore, embedder: Embedder, demo_db: DemoLoadReport
) -> None:
    sync_schema(demo_db.readonly_url, schema_store, embedder, database="other", domain="other")
    context = retrieve_schema_context("revenue by region", store=schema_store, embedder=embedder, domains=["other"])
    assert context.tables and context.notes == []
    demo = retrieve_schema_context("revenue by region", store=schema_store, embedder=embedder, domains=["analytics"])
    assert demo.notes


def test_periods_are_literal_half_open_ranges_from_today() -> None:
    hints = period_hints(date(2026, 1, 15))
    assert "last quarter (прошлый квартал): '2025-10-01' to '2026-01-01'" in hints
    assert "last month (прошлый месяц): '2025-12-01' to '2026-01-01'" in hints
    assert "last year (прошлый год): '2025-01-01' to '2026-01-01'" in hints


def test_postgres_error_goes_back_to_the_llm_and_the_repair_writes_sql_without_the_gate(
    schema_store: VectorStore, embedder: Embedder, sql_runner: PostgresSqlRunner
) -> None:
    llm = FakeLLM([_sql("SELECT count(*) FROM orders o WHERE o.no_such_column = 1"),
                   json.dumps({"sql": "SELECT count(*) AS n FROM orders"})])
    answer = answer_analytics("how many orders are there?", llm=llm, store=schema_store, embedder=embedder,
                              runner=sql_runner, language="en", today=TODAY, options=NO_EXTRAS)
    assert answer.status == "ok" and answer.retries == 1 and answer.rows[0][0] > 30000
    repair_turn = llm.received[1][-1].content
    assert "no_such_column" in repair_turn and "failed" in repair_turn


def test_unclear_question_gets_a_clarification_listing_the_data(
    schema_store: VectorStore, embedder: Embedder, sql_runner: PostgresSqlRunner
) -> None:
    llm = FakeLLM([_sql("", status="unclear")])
    answer = answer_analytics("как дела у бизнеса?", llm=llm, store=schema_store, embedder=embedder,
                              runner=sql_runner, language="ru", today=TODAY, options=NO_EXTRAS)
    assert answer.status == "clarify" and "Уточните" in answer.text and "orders" in answer.text
    assert answer.sql is None and len(llm.received) == 1


def test_a_column_that_every_repair_still_lacks_becomes_a_no_data_answer(
    schema_store: VectorStore, embedder: Embedder, sql_runner: PostgresSqlRunner
) -> None:
    bad = "SELECT avg(c.satisfaction_score) FROM customers c"
    other = json.dumps({"sql": "SELECT avg(c.nps_score) FROM customers c"})
    # The first repair repeats the failed query (differing only in case): it is re-sampled, never re-run;
    # the second repair repeats twice, so the loop stops instead of running it again.
    llm = FakeLLM([_sql(bad), json.dumps({"sql": bad.replace("avg", "AVG")}), other, other, other])
    answer = answer_analytics("how happy are our customers?", llm=llm, store=schema_store, embedder=embedder,
                              runner=sql_runner, language="en", today=TODAY, options=NO_EXTRAS)
    assert answer.status == "clarify" and answer.retries == 2 and len(answer.attempts) == 5
    assert "no nps_score" in answer.text and "orders" in answer.text and "does not exist" not in answer.text


def test_an_error_other_than_missing_data_stays_an_error(
    schema_store: VectorStore, embedder: Embedder, sql_runner: PostgresSqlRunner
) -> None:
    bad = "SELECT 1 / (count(*) - count(*)) FROM orders"
    llm = FakeLLM([_sql(bad), json.dumps({"sql": bad}), json.dumps({"sql": bad + " o"}),
                   json.dumps({"sql": bad + " x"})])
    answer = answer_analytics("orders ratio", llm=llm, store=schema_store, embedder=embedder,
                              runner=sql_runner, language="en", today=TODAY, options=NO_EXTRAS)
    assert answer.status == "error" and answer.error_kind == "data"


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("Выручка по регионам за прошлый квартал", "прошлый квартал [2025-07-01 to before 2025-10-01]"),
        ("Сколько заказов в прошлом году?", "прошлом году [2024-01-01 to before 2025-01-01]?"),
        ("revenue last month vs this month", "this month [2025-12-01 to before 2026-01-01]"),
        ("Revenue this year by quarter", "this year [2025-01-01 to before 2026-01-01] by quarter"),
    ],
)
def test_relative_periods_in_the_question_get_their_dates(question: str, expected: str) -> None:
    assert expected in annotate_periods(question, TODAY)


def test_question_without_a_relative_period_is_unchanged() -> None:
    assert annotate_periods("Revenue by region in 2024", TODAY) == "Revenue by region in 2024"


def test_a_saved_question_runs_its_checked_query_and_a_different_one_gets_it_as_an_example(
    schema_store: VectorStore, embedder: Embedder, sql_runner: PostgresSqlRunner
) -> None:
    saved = "SELECT t.channel, count(*) AS tickets FROM support_tickets t GROUP BY t.channel ORDER BY 2 DESC"
    add_solved_example(schema_store, embedder, "Tickets per support channel", saved, domain="analytics")
    with_examples = AnalyticsOptions(narrate=False, explain=False, examples=3)

    llm = FakeLLM()
    same = answer_analytics("tickets per support channel?", llm=llm, store=schema_store, embedder=embedder,
                            runner=sql_runner, language="en", today=TODAY, options=with_examples)
    assert same.status == "ok" and llm.received == [] and same.attempts == []  # no model call at all
    assert same.sql is not None and "GROUP BY t.channel ORDER BY 2 DESC" in same.sql
    assert same.columns == ["channel", "tickets"] and len(same.rows) >= 3

    # Not the same question: the model writes the query, and sees the saved pair as an example.
    llm = FakeLLM([_sql("SELECT t.channel, count(*) AS n FROM support_tickets t WHERE t.priority = 'urgent' "
                        "GROUP BY t.channel")])
    other = answer_analytics("Urgent tickets per support channel", llm=llm, store=schema_store, embedder=embedder,
                             runner=sql_runner, language="en", today=TODAY, options=with_examples)
    assert other.status == "ok" and other.sql != saved and len(llm.received) == 1
    assert any(m.role == "assistant" and "support_tickets t GROUP BY" in m.content for m in llm.received[0])


def test_a_saved_query_that_no_longer_runs_falls_back_to_the_model(
    schema_store: VectorStore, embedder: Embedder, sql_runner: PostgresSqlRunner
) -> None:
    add_solved_example(schema_store, embedder, "Average ticket rating",
                       "SELECT avg(t.rating_removed_since) FROM support_tickets t", domain="analytics")
    llm = FakeLLM([_sql("SELECT count(*) AS n FROM support_tickets t")])
    answer = answer_analytics("Average ticket rating", llm=llm, store=schema_store, embedder=embedder,
                              runner=sql_runner, language="en", today=TODAY,
                              options=AnalyticsOptions(narrate=False, explain=False, examples=3))
    assert answer.status == "ok" and answer.attempts == ["SELECT count(*) AS n FROM support_tickets t"]
    assert len(llm.received) == 1 and answer.rows[0][0] > 0
