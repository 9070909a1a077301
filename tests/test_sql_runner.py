# ruff: noqa: F811, E501  (pytest fixtures imported by name; long SQL literals)
"""PostgresSqlRunner against the real demo database as the read-only role."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from analytics_fixtures import demo_admin_url, demo_db, sql_runner  # noqa: F401

from rag_bot.analytics.sql_guard import validate_sql
from rag_bot.analytics.sql_runner import CUT_MARKER, PostgresSqlRunner, SqlExecutionError
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


# A fresh interpreter measures the runner's peak memory (VmHWM) for one query, so the test process's own
# peak (models, earlier tests) cannot hide the growth.
_RSS_PROBE = """
import json, sys
from rag_bot.analytics.sql_runner import PostgresSqlRunner
def peak_kb():  # VmHWM: this image's peak RSS (ru_maxrss would include the parent's, inherited at fork)
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1])
with PostgresSqlRunner(sys.argv[1], statement_timeout_ms=20000) as runner:
    runner.run_unguarded("SELECT 1")
    before = peak_kb()
    result = runner.run_unguarded(sys.argv[2])
    after = peak_kb()
print(json.dumps({"kb": after - before, "len": len(result.rows[0][0]), "tail": result.rows[0][0][-12:],
                  "cut": result.cells_cut, "second": result.rows[0][1]}))
"""

# The process-growth bound for a 100 MB cell: the 4 KB cell cap plus psycopg/libpq buffers. Without
# the cap the runner grew by ~290 MB on the same query (issue 18).
MAX_RSS_GROWTH_KB = 20_000


@pytest.mark.parametrize("sql", ["SELECT repeat('x', 100000000) AS big, 1 AS n",
                                 "SELECT lpad('x', 100000000, 'y') AS big, 1 AS n"])
def test_runner_cuts_a_100_mb_cell_inside_postgres_under_a_memory_bound(demo_db, sql: str) -> None:
    probe = subprocess.run([sys.executable, "-c", _RSS_PROBE, demo_db.readonly_url, sql],
                           capture_output=True, text=True, timeout=120, check=True)
    measured = json.loads(probe.stdout.strip().splitlines()[-1])
    assert measured["len"] == 4096 + len(CUT_MARKER) and measured["tail"].endswith(CUT_MARKER)
    assert measured["cut"] == 1 and measured["second"] == 1
    assert measured["kb"] < MAX_RSS_GROWTH_KB, measured


def test_guarded_10_mb_cells_are_cut_too(sql_runner: PostgresSqlRunner) -> None:
    result = sql_runner.run(validate_sql("SELECT lpad(name_en, 10000000, '.') AS padded FROM regions"))
    assert result.row_count == 7 and result.cells_cut == 7
    assert all(len(r[0].encode()) == 4096 + len(CUT_MARKER.encode()) for r in result.rows)


def test_runner_cuts_long_cells_on_a_character_boundary_and_keeps_short_ones(demo_db) -> None:
    with PostgresSqlRunner(demo_db.readonly_url, max_cell_bytes=100) as runner:
        result = runner.run_unguarded("SELECT repeat('ж', 80) AS ru, 'short' AS en, 12.5::numeric AS n")
    ru, en, n = result.rows[0]
    assert ru == "ж" * 50 + CUT_MARKER and en == "short" and n == Decimal("12.5") and result.cells_cut == 1


def test_runner_cuts_long_non_text_values_and_keeps_the_type_of_short_ones(demo_db) -> None:
    with PostgresSqlRunner(demo_db.readonly_url, max_cell_bytes=200) as runner:
        result = runner.run_unguarded(
            "SELECT (SELECT array_agg(g) FROM generate_series(1, 1000) g) AS big, ARRAY[1, 2] AS small, "
            "json_build_object('a', 1) AS doc, (10::numeric ^ 500) AS huge"
        )
    big, small, doc, huge = result.rows[0]
    assert big.startswith("{1,2,3,") and big.endswith(CUT_MARKER) and len(big) == 200 + len(CUT_MARKER)
    assert small == [1, 2] and doc == {"a": 1} and huge.endswith(CUT_MARKER) and result.cells_cut == 2


def test_runner_keeps_duplicate_and_odd_column_names(sql_runner: PostgresSqlRunner) -> None:
    result = sql_runner.run_unguarded('SELECT 1 AS x, 2 AS x, 3 AS "Сумма, ₽", 4')
    assert result.columns == ["x", "x", "Сумма, ₽", "?column?"] and result.rows == [(1, 2, 3, 4)]


@pytest.mark.parametrize("language, words", [("en", "too large"), ("ru", "слишком большой")])
def test_runner_stops_a_result_over_the_byte_cap_with_a_clear_error(demo_db, language: str, words: str) -> None:
    with PostgresSqlRunner(demo_db.readonly_url, max_result_bytes=100_000, row_cap=10_000) as runner:
        with pytest.raises(SqlExecutionError) as info:
            runner.run_unguarded("SELECT o.*, repeat('x', 500) AS pad FROM orders o", language=language)
        assert runner.run_unguarded("SELECT count(*) FROM orders").rows == [(40000,)]  # the pool still works
    assert info.value.kind == "too_large" and not info.value.fixable
    assert words in str(info.value) and "100 KB" in str(info.value).replace("КБ", "KB")


def test_session_advisory_lock_does_not_survive_the_query(demo_db, demo_admin_url: str) -> None:
    """Even where the role may take advisory locks, the connection goes back to the pool without them."""
    key = 918_273
    with psycopg.connect(demo_admin_url, autocommit=True) as admin:
        admin.execute("GRANT EXECUTE ON FUNCTION pg_advisory_lock(bigint) TO rag_bot_reader")
        try:
            with PostgresSqlRunner(demo_db.readonly_url, pool_size=1) as runner:
                assert runner.run_unguarded(f"SELECT pg_advisory_lock({key})").row_count == 1
                held = admin.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s",
                                     (key,)).fetchone()
                assert runner.run_unguarded("SELECT 1").rows == [(1,)]  # the same pooled connection
                still = admin.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s",
                                      (key,)).fetchone()
        finally:
            admin.execute("REVOKE EXECUTE ON FUNCTION pg_advisory_lock(bigint) FROM rag_bot_reader")
    assert held == (0,) and still == (0,)


def test_session_settings_do_not_follow_the_connection_to_the_next_query(demo_db) -> None:
    with PostgresSqlRunner(demo_db.readonly_url, pool_size=1) as runner:
        runner.run_unguarded("SELECT set_config('search_path', 'nowhere', false)")
        assert runner.run_unguarded("SELECT current_setting('search_path')").rows != [("nowhere",)]
