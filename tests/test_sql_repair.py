"""Deterministic identifier repair on the real failures of the 1.5B model (issue 19), no LLM needed."""

from __future__ import annotations

import sqlglot

from rag_bot.analytics.sql_repair import repair_identifiers, schema_index, unresolved_reason

# Defog's broker database as ingested (no declared foreign keys), and a slice of the demo company.
BROKER = schema_index([
    ("sbticker", "public", [("sbtickerid", "text"), ("sbtickersymbol", "text"), ("sbtickername", "text"),
                            ("sbtickertype", "text")], []),
    ("sbtransaction", "public", [("sbtxid", "text"), ("sbtxcustid", "text"), ("sbtxtickerid", "text"),
                                 ("sbtxdatetime", "timestamp"), ("sbtxtype", "text"), ("sbtxamount", "numeric")], []),
    ("sbcustomer", "public", [("sbcustid", "text"), ("sbcustname", "text"), ("sbcustcountry", "text")], []),
])
DEMO = schema_index([
    ("orders", "public", [("order_id", "integer"), ("customer_id", "integer"), ("order_date", "date"),
                          ("status", "text")], [("customer_id", "customers", "customer_id")]),
    ("order_items", "public", [("order_item_id", "integer"), ("order_id", "integer"), ("product_id", "integer"),
                               ("quantity", "integer")], [("order_id", "orders", "order_id")]),
    ("returns", "public", [("return_id", "integer"), ("order_item_id", "integer"), ("reason", "text")],
     [("order_item_id", "order_items", "order_item_id")]),
    ("customers", "public", [("customer_id", "integer"), ("name", "text"), ("region_id", "integer")], []),
    ("consumer_div.wallets", "consumer_div", [("wallet_id", "integer"), ("balance", "numeric")], []),
])


def _same(a: str, b: str) -> bool:
    return sqlglot.parse_one(a, read="postgres") == sqlglot.parse_one(b, read="postgres")


def test_repair_takes_the_nearest_column_of_the_same_table() -> None:
    sql = "SELECT t.tickersymbol, count(*) AS n FROM sbticker t GROUP BY t.tickersymbol ORDER BY n DESC"
    fixed = repair_identifiers(sql, BROKER)
    assert _same(fixed.sql, "SELECT t.sbtickersymbol, count(*) AS n FROM sbticker t GROUP BY t.sbtickersymbol "
                            "ORDER BY n DESC")
    assert fixed.unresolved == [] and unresolved_reason(fixed.sql, BROKER) is None


def test_repair_fixes_a_join_key_the_model_named_after_the_other_table() -> None:
    sql = ("SELECT t.sbtickersymbol, sum(tx.sbtxamount) FROM sbtransaction tx JOIN sbticker t "
           "ON t.sbtickerid = tx.sbtickerid GROUP BY t.sbtickersymbol")
    fixed = repair_identifiers(sql, BROKER)
    assert "tx.sbtxtickerid" in fixed.sql and "t.sbtickerid" in fixed.sql
    assert unresolved_reason(fixed.sql, BROKER) is None


def test_repair_fixes_a_misspelt_datetime_column_in_a_filter() -> None:
    sql = ("SELECT count(*) FROM sbtransaction WHERE sbtxt_datetime >= CURRENT_DATE - INTERVAL '7 days' "
           "AND sbtxtype = 'buy'")
    fixed = repair_identifiers(sql, BROKER)
    assert "sbtxdatetime >=" in fixed.sql and "sbtxt_datetime" not in fixed.sql
    assert unresolved_reason(fixed.sql, BROKER) is None


def test_repair_moves_a_column_to_the_table_that_has_it() -> None:
    sql = ("SELECT o.region_id, count(*) FROM orders o JOIN customers c ON c.customer_id = o.customer_id "
           "GROUP BY o.region_id")
    fixed = repair_identifiers(sql, DEMO)
    assert _same(fixed.sql, "SELECT c.region_id, count(*) FROM orders o JOIN customers c ON c.customer_id = "
                            "o.customer_id GROUP BY c.region_id")


def test_repair_takes_the_join_key_from_the_foreign_key_graph() -> None:
    # The demo's "3 categories with the most returns" query joined returns to order_items on order_id.
    sql = ("SELECT count(*) FROM returns r JOIN order_items oi ON r.order_item_id = oi.order_id "
           "JOIN orders o ON o.order_id = oi.order_id")
    fixed = repair_identifiers(sql, DEMO)
    assert "r.order_item_id = oi.order_item_id" in fixed.sql
    assert "o.order_id = oi.order_id" in fixed.sql  # a correct join stays as it was


def test_repair_qualifies_a_table_outside_the_search_path() -> None:
    fixed = repair_identifiers("SELECT sum(balance) FROM wallets", DEMO)
    assert "consumer_div.wallets" in fixed.sql
    assert unresolved_reason(fixed.sql, DEMO) is None


def test_repair_leaves_a_correct_query_byte_for_byte_alone() -> None:
    sql = ("WITH r AS (SELECT oi.product_id, count(*) AS n FROM returns x JOIN order_items oi "
           "ON oi.order_item_id = x.order_item_id GROUP BY 1) SELECT product_id, n FROM r ORDER BY n DESC")
    fixed = repair_identifiers(sql, DEMO)
    assert fixed.sql == sql and not fixed.changed


def test_repair_reports_what_it_cannot_place_with_the_real_candidates() -> None:
    fixed = repair_identifiers("SELECT o.impact_factor FROM orders o", DEMO)
    assert fixed.unresolved == ["column o.impact_factor"]
    assert "order_date" in fixed.candidates["orders"]


def test_a_column_of_a_table_the_query_did_not_join_is_pointed_out_for_the_repair_turn() -> None:
    from rag_bot.analytics.sql_repair import where_columns_live

    fixed = repair_identifiers("SELECT o.name FROM orders o", DEMO)
    assert fixed.unresolved == ["column o.name"]  # not guessed: no orders column is like it
    assert where_columns_live(["o.name"], DEMO) == {"name": ["customers"]}


def test_a_column_written_with_its_table_name_takes_the_tables_alias() -> None:
    # The business definitions write `order_items.quantity`; the model copies it into a query that
    # aliased the table `oi` (PostgreSQL: invalid reference to FROM-clause entry): seen in the gate run.
    sql = ("SELECT sum(order_items.quantity) AS units FROM orders o JOIN order_items oi ON oi.order_id = o.order_id "
           "WHERE o.status NOT IN ('cancelled', 'returned')")
    fixed = repair_identifiers(sql, DEMO)
    assert _same(fixed.sql, "SELECT sum(oi.quantity) AS units FROM orders o JOIN order_items oi "
                            "ON oi.order_id = o.order_id WHERE o.status NOT IN ('cancelled', 'returned')")
    assert fixed.changes and unresolved_reason(fixed.sql, DEMO) is None


def test_a_table_a_column_names_but_the_query_never_joined_is_joined_on_its_foreign_key() -> None:
    fixed = repair_identifiers("SELECT sum(order_items.quantity) AS units FROM orders o WHERE o.status = 'paid'",
                               DEMO)
    assert _same(fixed.sql, "SELECT sum(order_items.quantity) AS units FROM orders o JOIN order_items AS "
                            "order_items ON order_items.order_id = o.order_id WHERE o.status = 'paid'")
    assert unresolved_reason(fixed.sql, DEMO) is None
    # No foreign key links it to a table in scope: left to the model's repair turn, with the candidates.
    ambiguous = repair_identifiers("SELECT r.reason, customers.name FROM returns r", DEMO)
    assert ambiguous.unresolved == ["column customers.name"]
