"""Schema ingestor against a real PostgreSQL: one document per table, incremental, read-only, bounded."""

# ruff: noqa: F811, E501  (pytest fixtures imported by name from analytics_fixtures; SQL literals)

from __future__ import annotations

import uuid

import psycopg
from analytics_fixtures import demo_admin_url, demo_db  # noqa: F401

from ingest.db_schema import ColumnInfo, TableInfo, infer_references, render_table, sync_schema
from rag_bot.db import ensure_database, with_database
from rag_bot.demo import TABLES
from rag_bot.demo.load import DemoLoadReport
from rag_bot.embeddings import Embedder
from rag_bot.store import SearchQuery, VectorStore


def _schema_texts(store: VectorStore) -> dict[str, str]:
    rows = store.conn.execute(
        "SELECT d.source, c.text FROM documents d JOIN chunks c ON c.document_id = d.id WHERE d.kind = 'schema'"
    ).fetchall()
    return {source.rsplit("/", 1)[-1]: text for source, text in rows}


def test_sync_schema_stores_one_document_per_table_with_keys_comments_and_values(
    demo_db: DemoLoadReport, store: VectorStore, embedder: Embedder
) -> None:
    report = sync_schema(demo_db.readonly_url, store, embedder, domain={"orders": "sales"})
    assert sorted(report.added) == sorted(TABLES) and not report.failed
    texts = _schema_texts(store)
    orders = texts["orders"]
    assert "order_id integer PRIMARY KEY" in orders
    assert "customer_id integer REFERENCES customers(customer_id)" in orders
    assert "'cancelled'" in orders and "'delivered'" in orders  # low-cardinality values from pg_stats
    assert "~40,000 rows" in orders
    assert "выручка относится к этой дате" in orders  # column comment
    assert "Primary key" not in orders and "(FK" not in orders  # what the DDL says is not repeated
    targets = texts["sales_targets"]  # a composite key is one constraint
    assert "PRIMARY KEY (region_id, year, quarter)" in targets and "smallint PRIMARY KEY" not in targets
    assert "'ООО" not in texts["customers"]  # high-cardinality names are not sampled
    row = store.conn.execute("SELECT domain FROM documents WHERE source LIKE '%/orders'").fetchone()
    assert row is not None and row[0] == "sales"


def test_sync_schema_is_incremental_by_content_hash(
    demo_db: DemoLoadReport, store: VectorStore, embedder: Embedder
) -> None:
    sync_schema(demo_db.readonly_url, store, embedder)
    again = sync_schema(demo_db.readonly_url, store, embedder)
    assert again.added == [] and again.updated == [] and sorted(again.unchanged) == sorted(TABLES)


def test_sync_schema_uses_descriptions_and_prunes_dropped_tables(
    pg_admin_url: str, store: VectorStore, embedder: Embedder
) -> None:
    source = "src_" + uuid.uuid4().hex[:10]
    ensure_database(pg_admin_url, source)
    fresh_db_url = with_database(pg_admin_url, source)
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE author (aid bigint PRIMARY KEY, name text, kind text)")
        conn.execute("CREATE TABLE gone (x int)")
        conn.execute("INSERT INTO author SELECT g, 'name ' || g, (ARRAY['a','b'])[1 + g % 2] FROM generate_series(1, 50) g")
    descriptions = {"table_metadata": {"author": [{"column_name": "name", "data_type": "text",
                                                   "column_description": "Name of the author"}]}}
    first = sync_schema(fresh_db_url, store, embedder, descriptions=descriptions, database="academic")
    assert sorted(first.added) == ["author", "gone"]
    text = _schema_texts(store)["author"]
    assert "Name of the author" in text and "values: 'a', 'b'" in text  # sampled without statistics
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        conn.execute("DROP TABLE gone")
    second = sync_schema(fresh_db_url, store, embedder, descriptions=descriptions, database="academic")
    assert second.deleted == ["gone"] and second.unchanged == ["author"]


def test_schema_documents_are_found_by_a_business_question(
    demo_db: DemoLoadReport, store: VectorStore, embedder: Embedder
) -> None:
    sync_schema(demo_db.readonly_url, store, embedder)
    question = "Сколько открытых обращений в поддержку?"
    hits = store.search(SearchQuery(text=question, embedding=embedder.embed_queries([question])[0],
                                     kinds=("schema",), top_k=3))
    assert any(h.source.endswith("/support_tickets") for h in hits)
    # Schema documents never leak into document answers, which search kind 'doc'.
    doc_hits = store.search(SearchQuery(text=question, embedding=embedder.embed_queries([question])[0]))
    assert doc_hits == []


def test_sync_schema_reads_nothing_but_catalogs_and_statistics(
    demo_db: DemoLoadReport, demo_admin_url: str, store: VectorStore, embedder: Embedder
) -> None:
    with psycopg.connect(demo_admin_url, autocommit=True) as admin:
        admin.execute("SELECT pg_stat_reset()")
        sync_schema(demo_db.readonly_url, store, embedder)
        admin.execute("SELECT pg_stat_force_next_flush()")
        rows = admin.execute(
            "SELECT relname, seq_tup_read FROM pg_stat_user_tables WHERE seq_tup_read > 0"
        ).fetchall()
    assert rows == []  # statistics gave the sample values: no table was scanned


def _table(name: str, *columns: str) -> TableInfo:
    cols = tuple(ColumnInfo(name=c, type="bigint" if c.endswith("id") else "text", nullable=True, primary_key=False)
                 for c in columns)
    return TableInfo(name=name, kind="table", comment="", columns=cols, foreign_keys=(), referenced_by=(),
                     rows_estimate=None)


def test_a_schema_without_foreign_keys_gets_joins_inferred_from_key_names() -> None:
    # Defog's academic database: no constraints at all, keys named by the table's initial.
    tables = [
        _table("author", "aid", "homepage", "name", "oid"), _table("organization", "name", "oid"),
        _table("publication", "abstract", "cid", "pid", "title"), _table("publication_keyword", "pid", "kid"),
        _table("keyword", "keyword", "kid"), _table("writes", "aid", "pid"),
        _table("review", "business_id", "user_id", "text"), _table("business", "business_id", "name"),
        _table("users", "user_id", "name"),
    ]
    refs = {(t.name, c.name): c.references for t in infer_references(tables) for c in t.columns if c.references}
    assert refs == {
        ("author", "oid"): "organization.oid",
        ("publication_keyword", "pid"): "publication.pid",  # a link table owns nothing, though it starts with p
        ("publication_keyword", "kid"): "keyword.kid",
        ("writes", "aid"): "author.aid",
        ("writes", "pid"): "publication.pid",
        ("review", "business_id"): "business.business_id",
        ("review", "user_id"): "users.user_id",
    }
    rendered = render_table(next(t for t in infer_references(tables) if t.name == "writes"))
    assert "aid bigint REFERENCES author(aid)" in rendered
    by_name = {t.name: t for t in infer_references(tables)}
    assert ("writes", "aid", "aid") in by_name["author"].referenced_by


def test_sync_schema_reads_every_schema_the_role_may_read_with_names_as_queries_need_them(
    pg_admin_url: str, store: VectorStore, embedder: Embedder
) -> None:
    from rag_bot.analytics.pipeline import _allowed, _index
    from rag_bot.analytics.schema_context import scope_tables
    from rag_bot.analytics.sql_guard import validate_sql
    from rag_bot.analytics.sql_repair import repair_identifiers
    from rag_bot.db import readonly_url

    suffix = uuid.uuid4().hex[:8]
    name, role = "multi_" + suffix, "reader_" + suffix
    ensure_database(pg_admin_url, name)
    db_url = with_database(pg_admin_url, name)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA consumer_div")
        conn.execute("CREATE SCHEMA secret")
        conn.execute("CREATE TABLE public.users (user_id int PRIMARY KEY, joined date)")
        conn.execute("CREATE TABLE consumer_div.wallets (wallet_id int PRIMARY KEY, "
                     "user_id int REFERENCES public.users(user_id), balance numeric)")
        conn.execute("CREATE TABLE secret.salaries (x int)")
        conn.execute("INSERT INTO users SELECT g, DATE '2020-01-01' + g FROM generate_series(1, 40) g")
        conn.execute("ANALYZE")
        conn.execute(f"CREATE ROLE {role} LOGIN")
        for schema in ("public", "consumer_div"):
            conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
            conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}")
    report = sync_schema(readonly_url(pg_admin_url, name, role), store, embedder, database="multi")
    assert sorted(report.added) == ["consumer_div.wallets", "users"]  # secret.* is not readable: not ingested
    wallets = _schema_texts(store)["wallets"]
    assert "CREATE TABLE consumer_div.wallets" in wallets and "REFERENCES users(user_id)" in wallets
    assert "from 2020-01-02 to 2020-02-10" in _schema_texts(store)["users"]  # date range from pg_stats
    scope = scope_tables(store, None, ("internal",))
    allowed = _allowed(scope, runner=None)  # type: ignore[arg-type]  # the store has tables: no runner needed
    assert allowed.schemas == ["consumer_div", "public"]
    fixed = repair_identifiers("SELECT sum(w.balance) FROM wallets w JOIN users u ON u.user_id = w.user_id",
                               _index(scope))
    assert "consumer_div.wallets" in fixed.sql
    validate_sql(fixed.sql, allowed_tables=allowed.tables, allowed_schemas=allowed.schemas)
    narrowed = sync_schema(readonly_url(pg_admin_url, name, role), store, embedder, database="multi",
                           schema="public")
    assert narrowed.unchanged == ["users"] and narrowed.deleted == []  # narrowing never prunes other schemas
