"""Fixtures for the analytics tests: the demo company database (loaded once) and a read-only runner.

Import the fixtures by name in a test module (`from analytics_fixtures import demo_db, sql_runner`).
"""

# ruff: noqa: E501  (SQL literals)

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping

import psycopg
import pytest

from ingest.db_schema import sync_schema
from rag_bot.analytics.sql_runner import PostgresSqlRunner
from rag_bot.db import ensure_database, with_database
from rag_bot.demo import TABLES
from rag_bot.demo.load import DemoLoadReport, load_demo_database
from rag_bot.embeddings import Embedder
from rag_bot.store import VectorStore


@pytest.fixture(scope="session")
def demo_db(pg_admin_url: str) -> DemoLoadReport:
    """The TechnoSnab demo database on the session's server, with its read-only role (~10 s, once)."""
    return load_demo_database(pg_admin_url)


@pytest.fixture(scope="session")
def demo_admin_url(pg_admin_url: str, demo_db: DemoLoadReport) -> str:
    """Superuser URL of the demo database: for checksums and for running gold SQL."""
    return with_database(pg_admin_url, demo_db.db_name)


def demo_schema_store(pg_admin_url: str, demo_db: DemoLoadReport, embedder: Embedder, prefix: str,
                      domain: str | Mapping[str, str] | None = None) -> VectorStore:
    """A fresh store database holding the demo DB's schema documents (the caller closes it)."""
    name = prefix + uuid.uuid4().hex[:8]
    ensure_database(pg_admin_url, name)
    store = VectorStore(with_database(pg_admin_url, name), embedder_name=embedder.name, dim=embedder.dim)
    store.migrate()
    sync_schema(demo_db.readonly_url, store, embedder, domain=domain, database="demo")
    return store


@pytest.fixture
def sql_runner(demo_db: DemoLoadReport) -> Iterator[PostgresSqlRunner]:
    runner = PostgresSqlRunner(demo_db.readonly_url, statement_timeout_ms=3000, row_cap=1000)
    yield runner
    runner.close()


def demo_fingerprint(admin_url: str) -> dict[str, str]:
    """Row count and an md5 of every row per table, plus the set of tables, roles and functions."""
    out: dict[str, str] = {}
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for table in TABLES:
            row = conn.execute(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} t"
            ).fetchone()
            assert row is not None
            out[table] = f"{row[0]}:{row[1]}"
        for key, query in {
            "_tables": "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class WHERE relnamespace = "
            "'public'::regnamespace",
            "_roles": "SELECT string_agg(rolname || rolsuper::text, ',' ORDER BY rolname) FROM pg_roles",
            "_functions": "SELECT count(*)::text FROM pg_proc WHERE pronamespace = 'public'::regnamespace",
        }.items():
            row = conn.execute(query).fetchone()
            out[key] = str(row[0]) if row else ""
    return out
