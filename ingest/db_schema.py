"""Database schema -> one `kind='schema'` document per table, so the SQL generator retrieves the tables
a question needs instead of reading the whole schema.

Reads any SQLAlchemy-supported database with SQLAlchemy's inspector: tables and views, columns with
types, nullability, primary and foreign keys, table/column comments (or descriptions passed in, such
as Defog's `<db>.json`), row-count estimates (PostgreSQL: `pg_class.reltuples`, no scan) and a few
values of low-cardinality text columns (PostgreSQL: `pg_stats.most_common_vals`, no scan; elsewhere a
DISTINCT over at most `sample_rows` rows). Every read happens in a READ ONLY transaction; give it the
read-only role's URL. Incremental by content hash, like `ingest/pipeline.py`.

Business definitions (a Markdown page such as knowledge_base/db/README.md) and solved question→SQL
examples (rag_bot.analytics.examples) are stored beside the tables.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ingest.db_catalog import (
    pg_common_values,
    pg_date_ranges,
    readable_schemas,
    row_estimates,
    sample_values,
    search_path_of,
)
from rag_bot.embeddings import Embedder
from rag_bot.errors import IngestError
from rag_bot.store import ChunkRecord, DocumentRecord, VectorStore

logger = logging.getLogger(__name__)

SCHEMA_KIND = "schema"
_TEXT_TYPES = (sa.String, sa.Text, sa.Enum)


@dataclass
class SchemaSyncReport:
    database: str
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.database}: added {len(self.added)}, updated {len(self.updated)}, "
            f"unchanged {len(self.unchanged)}, deleted {len(self.deleted)}, failed {len(self.failed)} tables"
        )


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str
    nullable: bool
    primary_key: bool
    comment: str = ""
    references: str = ""  # "table.column"
    values: tuple[str, ...] = ()
    range: tuple[str, str] | None = None  # (lowest, highest) stored value of a date/time column


@dataclass(frozen=True)
class TableInfo:
    name: str
    kind: str  # "table" | "view"
    comment: str
    columns: tuple[ColumnInfo, ...]
    foreign_keys: tuple[tuple[str, str, str], ...]  # (column, ref_table, ref_column)
    referenced_by: tuple[tuple[str, str, str], ...]  # (table, column, own column)
    rows_estimate: int | None
    schema: str = "public"  # the database schema; `name` is qualified with it when the database needs that


def sqlalchemy_url(database_url: str) -> str:
    """SQLAlchemy URL for psycopg 3 (plain postgres URLs would pick psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url[len(prefix):]
    return database_url


def database_label(database_url: str) -> str:
    name = urlsplit(sqlalchemy_url(database_url)).path.lstrip("/")
    return name or "default"


def _normalise_descriptions(descriptions: Mapping[str, Any] | None) -> dict[str, dict[str, str]]:
    """table -> column -> description, from Defog's `{"table_metadata": {...}}` or a plain mapping."""
    if not descriptions:
        return {}
    tables = descriptions.get("table_metadata", descriptions)
    out: dict[str, dict[str, str]] = {}
    for table, columns in tables.items():
        if isinstance(columns, Mapping):
            out[table.lower()] = {str(k).lower(): str(v) for k, v in columns.items()}
        elif isinstance(columns, list):
            out[table.lower()] = {
                str(c.get("column_name", "")).lower(): str(c.get("column_description", "") or "")
                for c in columns
                if isinstance(c, Mapping)
            }
    return out


def _qualified(schema: str, table: str, search_path: list[str], clashes: set[str]) -> str:
    """The name a query must use: bare for a table on the search path whose name no other ingested
    schema also has, else `schema.table`."""
    return table if schema in search_path and table not in clashes else f"{schema}.{table}"


def read_schema(
    engine: Engine,
    *,
    schema: str | Sequence[str] | None = None,
    samples: bool = True,
    descriptions: Mapping[str, Any] | None = None,
    sample_rows: int = 1000,
    date_ranges: bool = True,
) -> list[TableInfo]:
    """Everything the prompt needs about each table and view, read in one READ ONLY transaction.

    `schema` None reads every schema the role may read (`readable_schemas`); a name or a list narrows
    it. Table names come back qualified (`consumer_div.customers`) unless the search path reaches them.
    """
    described = _normalise_descriptions(descriptions)
    with warnings.catch_warnings(), engine.connect() as conn:
        # Extension types (vector, PostGIS...) are unknown to SQLAlchemy; it warns and reports NullType.
        warnings.simplefilter("ignore", sa.exc.SAWarning)
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SET TRANSACTION READ ONLY"))
        inspector = sa.inspect(conn)
        schemas = readable_schemas(conn) if schema is None else [schema] if isinstance(schema, str) else list(schema)
        search_path = search_path_of(conn)
        listed: dict[str, list[tuple[str, str]]] = {}
        for name_space in schemas:
            tables = [(name, "table") for name in inspector.get_table_names(schema=name_space)]
            tables += [(name, "view") for name in inspector.get_view_names(schema=name_space)]
            listed[name_space] = tables
        seen: dict[str, int] = {}
        for tables in listed.values():
            for name, _ in tables:
                seen[name] = seen.get(name, 0) + 1
        clashes = {name for name, n in seen.items() if n > 1}
        result: list[TableInfo] = []
        def qualify(sch: str, table: str) -> str:
            return _qualified(sch, table, search_path, clashes)

        for name_space in schemas:
            result += _read_one_schema(conn, inspector, name_space, listed[name_space], described, samples,
                                       sample_rows, date_ranges, qualify)
        conn.rollback()
    if not any(table.foreign_keys for table in result):
        result = infer_references(result)
    return result


def _read_one_schema(
    conn: Connection,
    inspector: Any,
    schema: str,
    tables: list[tuple[str, str]],
    described: dict[str, dict[str, str]],
    samples: bool,
    sample_rows: int,
    date_ranges: bool,
    qualify: Callable[[str, str], str],
) -> list[TableInfo]:
    estimates = row_estimates(conn, schema)
    common = pg_common_values(conn, schema) if samples else {}
    ranges = pg_date_ranges(conn, schema) if date_ranges else {}
    fks_by_table = {name: inspector.get_foreign_keys(name, schema=schema) for name, _ in tables}

    default = inspector.default_schema_name or "public"

    def target(fk: Mapping[str, Any]) -> str:
        # SQLAlchemy leaves referred_schema empty for a table the search path reaches (the default schema).
        return qualify(fk.get("referred_schema") or default, fk["referred_table"])

    referenced: dict[str, list[tuple[str, str, str]]] = {}
    for name, table_fks in fks_by_table.items():
        for fk in table_fks:
            for own, ref in zip(fk["constrained_columns"], fk["referred_columns"], strict=False):
                referenced.setdefault(target(fk), []).append((qualify(schema, name), own, ref))
    result = []
    for name, kind in sorted(tables):
        qualified = qualify(schema, name)
        columns_raw = inspector.get_columns(name, schema=schema)
        pk = set(inspector.get_pk_constraint(name, schema=schema).get("constrained_columns") or [])
        try:
            comment = inspector.get_table_comment(name, schema=schema).get("text") or ""
        except NotImplementedError:
            comment = ""
        fk_map: dict[str, str] = {}
        fks: list[tuple[str, str, str]] = []
        for fk in fks_by_table[name]:
            for own, ref in zip(fk["constrained_columns"], fk["referred_columns"], strict=False):
                fk_map[own] = f"{target(fk)}.{ref}"
                fks.append((own, target(fk), ref))
        table_desc = described.get(name.lower(), {})
        columns = []
        for col in columns_raw:
            col_name = str(col["name"])
            values: list[str] = []
            if samples and isinstance(col["type"], _TEXT_TYPES) and col_name not in pk:
                values = common.get((name, col_name), [])
                if not values and (name, col_name) not in common and kind == "table":
                    values = sample_values(conn, schema, name, col_name, sample_rows)
            columns.append(
                ColumnInfo(
                    name=col_name,
                    type=str(col["type"]).lower(),
                    nullable=bool(col.get("nullable", True)),
                    primary_key=col_name in pk,
                    comment=str(col.get("comment") or table_desc.get(col_name.lower(), "") or ""),
                    references=fk_map.get(col_name, ""),
                    values=tuple(values),
                    range=ranges.get((name, col_name)),
                )
            )
        result.append(
            TableInfo(
                name=qualified,
                kind=kind,
                comment=comment,
                columns=tuple(columns),
                foreign_keys=tuple(fks),
                referenced_by=tuple(sorted(referenced.get(qualified, []))),
                rows_estimate=estimates.get(name),
                schema=schema,
            )
        )
    return result


def _is_key_name(column: str) -> bool:
    return column.lower().endswith("id")


def _key_owner(column: str, tables: list[TableInfo]) -> TableInfo | None:
    """The one table a key-like column belongs to, judged by names: `business_id` -> business,
    `user_id` -> users, `aid` -> author (initial + "id"). Link tables (every column a key) own nothing."""
    key = column.lower()
    stem = key[:-3] if key.endswith("_id") else key[:-2]
    candidates = []
    for table in tables:
        names = [c.name.lower() for c in table.columns]
        if key not in names or table.kind != "table" or all(_is_key_name(n) for n in names):
            continue
        name = table.name.rsplit(".", 1)[-1].lower()
        if stem and (name in (stem, stem + "s", stem + "es") or (len(stem) == 1 and name.startswith(stem))):
            candidates.append(table)
    return candidates[0] if len(candidates) == 1 else None


def infer_references(tables: list[TableInfo]) -> list[TableInfo]:
    """Likely joins for a schema that declares no foreign keys (common in analytics copies and in
    Defog's dumps): a key-like column shared by several tables references the table it is named
    after. Without them a small model guesses joins (e.g. `publication.aid`) and repairs don't help."""
    owners: dict[str, TableInfo] = {}
    for table in tables:
        for col in table.columns:
            if _is_key_name(col.name) and col.name.lower() not in owners:
                owner = _key_owner(col.name, tables)
                if owner is not None:
                    owners[col.name.lower()] = owner
    result = []
    for table in tables:
        columns, fks = [], []
        for col in table.columns:
            owner = owners.get(col.name.lower())
            if owner is not None and owner.name != table.name and not col.references:
                owned = next(c.name for c in owner.columns if c.name.lower() == col.name.lower())
                col = replace(col, references=f"{owner.name}.{owned}")
                fks.append((col.name, owner.name, owned))
            columns.append(col)
        result.append(replace(table, columns=tuple(columns), foreign_keys=tuple(fks)))
    inferred = {name: [(t.name, own, ref) for t in result for own, ref_table, ref in t.foreign_keys
                       if ref_table == name] for name in {t.name for t in result}}
    return [replace(t, referenced_by=tuple(sorted(inferred.get(t.name, [])))) for t in result]


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


_FK_NOTE = re.compile(r"\s*\((?:FK|foreign key)[^)]*\)", re.I)
_GENERIC_COMMENT = re.compile(r"^(primary key|первичный ключ)\.?$", re.I)
COMMENT_CHARS = 90


def _column_note(col: ColumnInfo) -> str:
    """The column comment without what the DDL already says (FK targets, 'Primary key'), kept short."""
    comment = _FK_NOTE.sub("", _one_line(col.comment)).strip()
    if _GENERIC_COMMENT.match(comment):
        comment = ""
    if len(comment) > COMMENT_CHARS:
        comment = comment[: COMMENT_CHARS - 1].rsplit(" ", 1)[0] + "…"
    if col.range:
        span = f"from {col.range[0]} to {col.range[1]}"
        comment = f"{comment}; {span}" if comment else span
    if col.values:
        values = ", ".join(f"'{v}'" for v in col.values)
        comment = f"{comment}; values: {values}" if comment else f"values: {values}"
    return comment


def render_table(table: TableInfo) -> str:
    """The table as compact commented DDL: the form code models read best, in few tokens.

    Nullability and the reverse joins are left out (the other tables' REFERENCES show them); a
    composite primary key is one table constraint, not a PRIMARY KEY on each column.
    """
    head = f"-- {table.name}"
    if table.comment:
        head += f": {_one_line(table.comment)}"
    if table.rows_estimate is not None:
        head += f" (~{table.rows_estimate:,} rows)"
    pk = [c.name for c in table.columns if c.primary_key]
    items: list[tuple[str, str]] = []
    for col in table.columns:
        line = f"  {col.name} {col.type}"
        if col.primary_key and len(pk) == 1:
            line += " PRIMARY KEY"
        if col.references:
            ref_table, ref_col = col.references.rsplit(".", 1)
            line += f" REFERENCES {ref_table}({ref_col})"
        items.append((line, _column_note(col)))
    if len(pk) > 1:
        items.append((f"  PRIMARY KEY ({', '.join(pk)})", ""))
    keyword = "VIEW" if table.kind == "view" else "TABLE"
    lines = [head, f"CREATE {keyword} {table.name} ("]
    for i, (line, note) in enumerate(items):
        line += "," if i < len(items) - 1 else ""
        lines.append(f"{line} -- {note}" if note else line)
    lines.append(");")
    return "\n".join(lines)


def _hash(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def sync_schema(
    database_url: str,
    store: VectorStore,
    embedder: Embedder,
    *,
    schema: str | Sequence[str] | None = None,
    domain: str | Mapping[str, str] | None = None,
    samples: bool = True,
    descriptions: Mapping[str, Any] | None = None,
    database: str | None = None,
    audience: str = "internal",
    prune: bool = True,
    progress: Callable[[str], None] | None = None,
    date_ranges: bool = True,
) -> SchemaSyncReport:
    """Bring the store's schema documents for a database in line with the database.

    Args:
        database_url: the database to describe; use the read-only role's URL.
        store, embedder: where the table documents go.
        schema: the database schema(s) to read; None (the default) reads every schema the role may
            read, and the analytics guard then allows exactly those.
        domain: one domain for every table, or table -> domain (others get "analytics"); the
            analytics path can prune the schema to the question's domain with it.
        samples: include a few values of low-cardinality text columns.
        descriptions: column descriptions used where the database has no comments (Defog's
            `<db>.json` format or {table: {column: text}}).
        database: label used in sources (`schema://<database>/<schema>/<table>`); defaults to the
            database name in the URL.
        audience: "internal" by default: table structure is not for the public bot.
        prune: delete documents of tables that no longer exist (in the schemas read; with
            `schema=None`, in the whole database).
        date_ranges: note each date/time column's lowest and highest value (from statistics).
    """
    label = database or database_label(database_url)
    report = SchemaSyncReport(database=label)
    engine = sa.create_engine(sqlalchemy_url(database_url), poolclass=sa.pool.NullPool)
    try:
        tables = read_schema(engine, schema=schema, samples=samples, descriptions=descriptions,
                             date_ranges=date_ranges)
    except sa.exc.SQLAlchemyError as exc:
        raise IngestError(
            f"Could not read the schema of {label}: {str(exc).splitlines()[0]}. Check the URL and that the "
            "role may read the tables."
        ) from exc
    finally:
        engine.dispose()
    base = f"schema://{label}/"
    read = sorted({t.schema for t in tables} | ({schema} if isinstance(schema, str) else set(schema or ())))
    prefixes = [base] if schema is None else [f"{base}{name}/" for name in read]
    stored: dict[str, str] = {}
    for prefix in prefixes:
        stored.update(store.document_hashes(prefix, kind=SCHEMA_KIND))
    seen: set[str] = set()
    for table in tables:
        source = f"{base}{table.schema}/{table.name.rsplit('.', 1)[-1]}"
        seen.add(source)
        if progress:
            progress(table.name)
        text = render_table(table)
        table_domain = (
            domain.get(table.name, "analytics") if isinstance(domain, Mapping) else (domain or "analytics")
        )
        metadata = {
            "type": "table",
            "database": label,
            "schema": table.schema,
            "table": table.name,  # as queries must write it (qualified outside the search path)
            "name": table.name.rsplit(".", 1)[-1],
            "columns": [c.name for c in table.columns],
            "foreign_keys": [list(fk) for fk in table.foreign_keys],
            "neighbours": sorted(
                {t for _, t, _ in table.foreign_keys} | {t for t, _, _ in table.referenced_by}
            ),
            "rows_estimate": table.rows_estimate,
        }
        content_hash = _hash(text, table_domain, audience, json.dumps(metadata, sort_keys=True))
        if stored.get(source) == content_hash:
            report.unchanged.append(table.name)
            continue
        try:
            vectors = embedder.embed_passages([text])
        except Exception as exc:  # noqa: BLE001 - one table must not stop the rest
            report.failed.append((table.name, f"embedding failed: {exc}"))
            continue
        record = DocumentRecord(
            source=source,
            title=f"{label}.{table.name}",
            domain=table_domain,
            audience=audience,
            language="en",
            content_hash=content_hash,
            kind=SCHEMA_KIND,
            metadata=metadata,
        )
        store.upsert_document(record, [ChunkRecord(text=text, ordinal=0, heading=table.name)], vectors)
        (report.updated if source in stored else report.added).append(table.name)
    gone = sorted(set(stored) - seen)
    if prune and gone:
        store.delete_documents(gone)
        report.deleted.extend(s.rsplit("/", 1)[-1] for s in gone)
    logger.info("schema sync %s", report.summary())
    return report


def sync_schema_notes(
    path: Path,
    store: VectorStore,
    embedder: Embedder,
    *,
    database: str,
    domain: str = "analytics",
    audience: str = "internal",
) -> bool:
    """Store a Markdown page of business definitions, one chunk per `##` section; False if unchanged."""
    text = path.read_text(encoding="utf-8")
    source = f"schema-notes://{database}/{path.name}"
    content_hash = _hash(text, domain, audience)
    if store.document_hashes(source, kind=SCHEMA_KIND).get(source) == content_hash:
        return False
    sections = re.split(r"(?m)^(?=## )", text)
    chunks: list[ChunkRecord] = []
    for section in sections:
        body = section.strip()
        if not body:
            continue
        heading = body.splitlines()[0].lstrip("#").strip()
        chunks.append(ChunkRecord(text=body, ordinal=len(chunks), heading=heading))
    vectors = embedder.embed_passages([c.text for c in chunks])
    record = DocumentRecord(
        source=source, title=f"{database} definitions", domain=domain, audience=audience,
        language="en", content_hash=content_hash, kind=SCHEMA_KIND,
        metadata={"type": "definitions", "database": database},
    )
    store.upsert_document(record, chunks, vectors)
    return True
