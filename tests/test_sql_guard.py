"""The SQL guard on real sqlglot parses: every rejection rule, LIMIT handling, and zero false rejections
on the gold SQL of our eval sets and of the Defog dev set."""

# ruff: noqa: E501  (SQL literals)

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from rag_bot.analytics.sql_guard import QueryRejected, validate_sql
from rag_bot.errors import SQLRejected
from rag_bot.evaluation.sql import expand_gold_variants

REPO = Path(__file__).resolve().parent.parent
DEFOG = Path("/work/shared/eval/text2sql-defog")
DEMO_TABLES = [
    "regions", "offices", "departments", "employees", "customers", "product_categories", "products",
    "orders", "order_items", "invoices", "payments", "returns", "support_tickets", "sales_targets",
]


def rejected(sql: str, rule: str, **kwargs: object) -> QueryRejected:
    with pytest.raises(QueryRejected) as info:
        validate_sql(sql, **kwargs)  # type: ignore[arg-type]
    assert info.value.rule == rule, (sql, info.value.rule, info.value.detail)
    assert isinstance(info.value, SQLRejected)
    return info.value


@pytest.mark.parametrize(
    "sql",
    [
        "DROP TABLE orders",
        "DELETE FROM orders",
        "UPDATE orders SET status = 'paid'",
        "INSERT INTO regions VALUES (9, 'X', 'X', 'X', 'X')",
        "TRUNCATE orders",
        "ALTER TABLE orders ADD COLUMN x int",
        "CREATE TABLE x AS SELECT * FROM orders",
        "GRANT SELECT ON orders TO public",
        "MERGE INTO orders o USING regions r ON false WHEN NOT MATCHED THEN DO NOTHING",
    ],
)
def test_sql_guard_rejects_ddl_and_dml(sql: str) -> None:
    error = rejected(sql, "write")
    assert "read-only" in str(error)


@pytest.mark.parametrize("sql", ["COPY orders TO PROGRAM 'cat /etc/passwd'", "COPY orders FROM '/tmp/x'"])
def test_sql_guard_rejects_copy(sql: str) -> None:
    rejected(sql, "write")


@pytest.mark.parametrize(
    "sql", ["SET statement_timeout = 0", "SET ROLE postgres", "RESET ALL", "CALL do_things()",
            "DO $$ BEGIN PERFORM 1; END $$", "VACUUM orders", "LOCK TABLE orders", "EXPLAIN ANALYZE DELETE FROM orders",
            "BEGIN", "COMMIT", "VALUES (1)", "SHOW ALL", "LISTEN x", "NOTIFY x"]
)
def test_sql_guard_rejects_non_select_statements(sql: str) -> None:
    with pytest.raises(QueryRejected) as info:
        validate_sql(sql)
    assert info.value.rule in {"write", "not_select", "parse"}


def test_sql_guard_rejects_data_modifying_cte() -> None:
    rejected("WITH d AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM d", "write")


def test_sql_guard_rejects_second_statement() -> None:
    error = rejected("SELECT 1; DROP TABLE orders", "multiple")
    assert "2" in str(error)


def test_sql_guard_rejects_second_statement_after_a_comment() -> None:
    rejected("SELECT 1 -- harmless\n; DELETE FROM orders", "multiple")


def test_sql_guard_ignores_statements_inside_comments_and_strings() -> None:
    ok = validate_sql("SELECT 1 /* ; DROP TABLE orders */ AS x, ';DELETE FROM orders' AS y")
    assert "DROP" not in ok.sql.upper().split("/*")[0]


@pytest.mark.parametrize("sql", ["SELECT * FROM orders FOR UPDATE", "SELECT * FROM orders FOR SHARE",
                                 "SELECT * FROM orders FOR NO KEY UPDATE SKIP LOCKED"])
def test_sql_guard_rejects_locking_clauses(sql: str) -> None:
    rejected(sql, "lock")


def test_sql_guard_rejects_select_into() -> None:
    rejected("SELECT * INTO stolen FROM orders", "into")


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM pg_catalog.pg_authid",
        "SELECT * FROM pg_authid",
        "SELECT * FROM pg_shadow",
        "SELECT table_name FROM information_schema.tables",
        "SELECT * FROM pg_stat_activity",
        "SELECT o.* FROM orders o JOIN pg_roles r ON true",
    ],
)
def test_sql_guard_rejects_system_catalogs(sql: str) -> None:
    rejected(sql, "system")


@pytest.mark.parametrize(
    "sql, name",
    [
        ("SELECT pg_read_file('/etc/passwd')", "pg_read_file"),
        ("SELECT * FROM pg_ls_dir('.')", "pg_ls_dir"),
        ("SELECT pg_sleep(600)", "pg_sleep"),
        ("SELECT pg_sleep_for('10 minutes')", "pg_sleep_for"),
        ("SELECT pg_terminate_backend(1)", "pg_terminate_backend"),
        ("SELECT lo_import('/etc/passwd')", "lo_import"),
        ("SELECT lo_export(1, '/tmp/x')", "lo_export"),
        ("SELECT dblink('host=evil', 'select 1')", "dblink"),
        ("SELECT dblink_exec('host=evil', 'drop table x')", "dblink_exec"),
        ("SELECT set_config('statement_timeout', '0', false)", "set_config"),
        ("SELECT current_setting('data_directory')", "current_setting"),
        ("SELECT query_to_xml('select * from pg_authid', true, true, '')", "query_to_xml"),
        ("SELECT nextval('orders_order_id_seq')", "nextval"),
        ("SELECT count(*) FROM orders WHERE pg_advisory_lock(1) IS NULL", "pg_advisory_lock"),
        ("SELECT version()", "version"),
    ],
)
def test_sql_guard_rejects_dangerous_functions(sql: str, name: str) -> None:
    error = rejected(sql, "function")
    assert name in str(error)


def test_sql_guard_rejects_tables_outside_the_allow_list() -> None:
    error = rejected("SELECT * FROM salaries_secret", "table", allowed_tables=DEMO_TABLES)
    assert "salaries_secret" in str(error)


def test_sql_guard_rejects_other_schemas_and_databases() -> None:
    rejected("SELECT * FROM private.orders", "schema", allowed_tables=DEMO_TABLES)
    rejected("SELECT * FROM otherdb.public.orders", "schema", allowed_tables=DEMO_TABLES)


def test_sql_guard_accepts_ctes_qualified_names_and_set_operations() -> None:
    query = validate_sql(
        "WITH t AS (SELECT region_id FROM public.regions) SELECT * FROM t UNION SELECT region_id FROM customers",
        allowed_tables=DEMO_TABLES,
    )
    assert query.tables == {"regions", "customers"}


def test_sql_guard_rejects_unparseable_text_and_empty_text() -> None:
    rejected("SELEC FROM WHERE (", "parse")
    rejected("   ", "empty")
    rejected("-- nothing here", "empty")


def test_sql_guard_adds_a_limit_when_missing() -> None:
    query = validate_sql("SELECT * FROM orders", max_rows=100)
    assert query.sql.endswith("LIMIT 100") and query.limit == 100 and query.limit_added


def test_sql_guard_clamps_a_large_limit_and_keeps_a_small_one() -> None:
    assert validate_sql("SELECT * FROM orders LIMIT 100000", max_rows=50).limit == 50
    small = validate_sql("SELECT * FROM orders ORDER BY 1 LIMIT 5 OFFSET 10", max_rows=50)
    assert small.limit == 5 and not small.limit_added and "OFFSET 10" in small.sql
    assert validate_sql("SELECT * FROM orders LIMIT ALL", max_rows=50).limit == 50


def test_sql_guard_messages_are_in_the_users_language() -> None:
    error = rejected("DELETE FROM orders", "write", language="ru")
    assert "только запросы на чтение" in str(error)


def _demo_gold() -> list[tuple[str, str]]:
    items = []
    for name in ("sql_qa.jsonl", "charts.jsonl"):
        for line in (REPO / "knowledge_base" / "eval" / name).read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record.get("sql"):
                items += [(record["id"], variant) for variant in expand_gold_variants(record["sql"])]
    return items


@pytest.mark.parametrize("record_id, sql", _demo_gold(), ids=[i for i, _ in _demo_gold()])
def test_every_demo_gold_query_passes_the_guard(record_id: str, sql: str) -> None:
    validate_sql(sql, allowed_tables=DEMO_TABLES)


def test_every_defog_dev_gold_query_passes_the_guard() -> None:
    path = DEFOG / "questions" / "questions_gen_postgres.dev.csv"
    assert path.exists(), f"missing {path}"
    failures = []
    count = 0
    with path.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            for variant in expand_gold_variants(row["query"]):
                count += 1
                try:
                    validate_sql(variant)
                except SQLRejected as exc:
                    failures.append((row["db_name"], variant, str(exc)))
    assert count >= 190
    assert failures == []


def test_eval_subset_is_balanced_over_databases_then_categories() -> None:
    from rag_bot.evaluation.sql import EvalItem, select_items

    items = [EvalItem(id=f"{db}-{cat}-{n}", question="q", database=db, category=cat, gold="SELECT 1")
             for db in ("academic", "yelp", "atis") for cat in ("join", "ratio") for n in range(3)]
    picked = select_items(items, None, 6)
    assert sorted(i.database for i in picked) == ["academic", "academic", "atis", "atis", "yelp", "yelp"]
    assert {(i.database, i.category) for i in picked} == {(d, c) for d in ("academic", "yelp", "atis")
                                                          for c in ("join", "ratio")}
    assert select_items(items, ["ratio"], None) == [i for i in items if i.category == "ratio"]
