# ruff: noqa: F811, E501  (pytest fixtures imported by name; long SQL literals)
"""PostgresSqlRunner against the real demo database as the read-only role."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from analytics_fixtures import demo_admin_url, demo_db, sql_runner  # noqa: F401

from rag_bot.analytics.sql_guard import validate_sql
from rag_bot.analytics.sql_runner import PostgresSqlRunner, SqlExecutionError
from rag_bot.demo import TABLES
from rag_bot.evaluation.sql import expand_gold_variants

REPO = Path(__file__).resolve().parent.parent


def test_runner_lists_exactly_the_business_tables(sql_runner: PostgresSqlRunner) -> None:
    assert sorted(sql_runner.table_names()) == sorted(TABLES)


def test_runner_returns_columns_and_rows(sql_runner: PostgresSqlRunner) -> None:
    result = sql_runner.run(validate_sql("SELECT name_en, region_id FROM regions ORDER BY region_id"))
    assert result.columns == ["name_en", "region_id"]
    assert result.rows[0] == ("Center", 1) and result.row_count == 7 and not result.truncated


def test_runner_caps_rows_and_says_so(demo_db) -> None:
    with PostgresSqlRunner(demo_db.readonly_url, row_cap=10) as runner:
        result = runner.run_unguarded("SELECT order_id FROM orders")
    assert result.row_count == 10 and result.truncated


def test_runner_stops_slow_queries_with_a_typed_timeout(demo_db) -> None:
    with PostgresSqlRunner(demo_db.readonly_url, statement_timeout_ms=300) as runner:
        with pytest.raises(SqlExecutionError) as info:
            runner.run_unguarded("SELECT count(*) FROM order_items a CROSS JOIN order_items b")
    assert info.value.kind == "timeout" and "too long" in str(info.value)


def test_runner_reports_unknown_columns_for_the_llm(sql_runner: PostgresSqlRunner) -> None:
    with pytest.raises(SqlExecutionError) as info:
        sql_runner.run(validate_sql("SELECT revenue FROM orders"))
    assert info.value.kind == "undefined" and "revenue" in info.value.detail and info.value.fixable
    assert "revenue" not in str(info.value)  # the user sees a plain sentence, not driver text


def test_runner_explain_plans_without_running(sql_runner: PostgresSqlRunner) -> None:
    plan = sql_runner.explain(validate_sql("SELECT * FROM order_items a CROSS JOIN order_items b"))
    assert plan.plan_rows >= 1000 and plan.total_cost > 0


def test_runner_uses_its_own_pool_and_a_read_only_transaction(sql_runner: PostgresSqlRunner) -> None:
    result = sql_runner.run_unguarded(
        "SELECT current_setting('transaction_read_only'), current_user, current_setting('statement_timeout')"
    )
    assert result.rows[0] == ("on", "rag_bot_reader", "3s")


def test_every_demo_gold_query_gives_the_same_rows_after_the_guard(
    sql_runner: PostgresSqlRunner, demo_admin_url: str
) -> None:
    """The guard re-renders SQL through sqlglot; that must never change a result."""
    lines = (REPO / "knowledge_base/eval/sql_qa.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    with psycopg.connect(demo_admin_url) as admin:
        for record in records:
            for variant in expand_gold_variants(record["sql"] or ""):
                expected = [tuple(r) for r in admin.execute(variant).fetchall()]
                got = sql_runner.run(validate_sql(variant, max_rows=1000)).rows
                assert got == expected[:1000], record["id"]
