"""What the database's catalogs and statistics say, read without scanning a table: which schemas the
role may read, row estimates, low-cardinality values and date ranges from `pg_stats` (a DISTINCT over a
few rows only where statistics are missing). Used by `ingest.db_schema.read_schema`."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

MAX_SAMPLE_VALUES = 12


def row_estimates(conn: Connection, schema: str) -> dict[str, int]:
    if conn.dialect.name != "postgresql":
        return {}
    rows = conn.execute(
        sa.text(
            "SELECT c.relname, c.reltuples::bigint FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = :schema AND c.relkind IN ('r', 'p', 'm')"
        ),
        {"schema": schema},
    ).all()
    return {str(name): int(n) for name, n in rows if n is not None and n >= 0}


def pg_common_values(conn: Connection, schema: str) -> dict[tuple[str, str], list[str]]:
    """(table, column) -> most common values, for columns whose statistics say they are few."""
    if conn.dialect.name != "postgresql":
        return {}
    rows = conn.execute(
        sa.text(
            "SELECT tablename, attname, n_distinct, most_common_vals::text::text[] FROM pg_stats "
            "WHERE schemaname = :schema"
        ),
        {"schema": schema},
    ).all()
    out: dict[tuple[str, str], list[str]] = {}
    for table, column, n_distinct, values in rows:
        # Present but empty: statistics say the column has many values, so it is not sampled.
        few = values and 0 < float(n_distinct or 0) <= MAX_SAMPLE_VALUES
        out[(str(table), str(column))] = [str(v) for v in values] if few else []
    return out


def sample_values(conn: Connection, schema: str, table: str, column: str, sample_rows: int) -> list[str]:
    """Distinct values among at most `sample_rows` rows; empty when the column looks high-cardinality."""
    preparer = conn.dialect.identifier_preparer
    source = f"{preparer.quote_schema(schema)}.{preparer.quote(table)}"
    col = preparer.quote(column)
    query = sa.text(
        f"SELECT DISTINCT v FROM (SELECT {col} AS v FROM {source} WHERE {col} IS NOT NULL "
        f"LIMIT {int(sample_rows)}) s LIMIT {MAX_SAMPLE_VALUES + 1}"
    )
    values = [str(r[0]) for r in conn.execute(query).all()]
    return sorted(values) if len(values) <= MAX_SAMPLE_VALUES else []


def readable_schemas(conn: Connection) -> list[str]:
    """Every non-system schema where this role may read at least one table or view (PostgreSQL); a
    company database rarely lives in `public` alone, and the role's grants say what the bot may use."""
    if conn.dialect.name != "postgresql":
        return [sa.inspect(conn).default_schema_name or "public"]
    rows = conn.execute(
        sa.text(
            "SELECT DISTINCT n.nspname FROM pg_namespace n JOIN pg_class c ON c.relnamespace = n.oid "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') "
            "AND n.nspname NOT LIKE 'pg\\_%' AND c.relkind IN ('r', 'p', 'v', 'm', 'f') "
            "AND has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT') ORDER BY 1"
        )
    ).all()
    return [str(r[0]) for r in rows]


def search_path_of(conn: Connection) -> list[str]:
    if conn.dialect.name != "postgresql":
        return [sa.inspect(conn).default_schema_name or ""]
    return [str(s) for s in conn.execute(sa.text("SELECT unnest(current_schemas(false))")).scalars()]


def pg_date_ranges(conn: Connection, schema: str) -> dict[tuple[str, str], tuple[str, str]]:
    """(table, column) -> (lowest, highest) value of date/time columns, from pg_stats (no scan): the
    histogram bounds and most common values of ANALYZE's sample, exact for tables under ~30,000 rows.
    The model then knows which years the data cover ("last year" on a 2019 dataset)."""
    if conn.dialect.name != "postgresql":
        return {}
    rows = conn.execute(
        sa.text(
            "SELECT s.tablename, s.attname, s.histogram_bounds::text, s.most_common_vals::text FROM pg_stats s "
            "JOIN pg_attribute a ON a.attname = s.attname JOIN pg_class c ON c.oid = a.attrelid "
            "AND c.relname = s.tablename JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = s.schemaname "
            "WHERE s.schemaname = :schema AND a.atttypid IN ('date'::regtype, 'timestamp'::regtype, "
            "'timestamptz'::regtype)"
        ),
        {"schema": schema},
    ).all()
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for table, column, bounds, common in rows:
        values = [v.strip().strip('"') for text in (bounds, common) if text for v in text.strip("{}").split(",")]
        values = [v for v in values if v and v.upper() != "NULL"]
        if values:
            out[(str(table), str(column))] = (min(values)[:10], max(values)[:10])
    return out
