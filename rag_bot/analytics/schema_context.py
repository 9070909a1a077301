"""Schema context for SQL generation: the tables a question needs, business definitions and solved
examples, retrieved from the store instead of pasting the whole schema (100+ tables must still fit)."""

# ruff: noqa: E501  (prompt and message catalogue lines are kept whole)

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from rag_bot.embeddings import Embedder
from rag_bot.store import ChunkRecord, DocumentRecord, SearchQuery, VectorStore

logger = logging.getLogger(__name__)

SCHEMA_KIND = "schema"
EXAMPLE_KIND = "sql_example"
TABLE_PREFIX = "schema://"
NOTES_PREFIX = "schema-notes://"


@dataclass(frozen=True)
class TableDoc:
    name: str
    text: str
    neighbours: tuple[str, ...] = ()


@dataclass
class SchemaContext:
    """What the prompt shows about the database for one question."""

    tables: list[TableDoc] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    examples: list[tuple[str, str]] = field(default_factory=list)
    tables_in_scope: list[str] = field(default_factory=list)

    @property
    def table_names(self) -> list[str]:
        return [t.name for t in self.tables]

    def render(self) -> str:
        parts = ["\n\n".join(t.text for t in self.tables)]
        if self.notes:
            parts.append("Business definitions:\n" + "\n\n".join(self.notes))
        return "\n\n".join(p for p in parts if p)


def _scope_tables(store: VectorStore, domains: Sequence[str] | None, audiences: Sequence[str]) -> list[TableDoc]:
    """Every table document in scope (cheap: one row per table, no embeddings read)."""
    sql = (
        "SELECT d.metadata->>'table', c.text, d.metadata->'neighbours' FROM documents d "
        "JOIN chunks c ON c.document_id = d.id WHERE d.kind = %s AND d.source LIKE %s "
        "AND d.audience = ANY(%s)"
    )
    params: list[object] = [SCHEMA_KIND, TABLE_PREFIX + "%", list(audiences)]
    if domains:
        sql += " AND d.domain = ANY(%s)"
        params.append(list(domains))
    rows = store.conn.execute(sql + " ORDER BY 1", params).fetchall()
    return [TableDoc(str(name), str(text), tuple(neigh or ())) for name, text, neigh in rows]


def retrieve_schema_context(
    question: str,
    *,
    store: VectorStore,
    embedder: Embedder,
    domains: Sequence[str] | None = None,
    audiences: Sequence[str] = ("public", "internal"),
    max_tables: int = 6,
    char_budget: int = 7000,
    include_all_below: int = 6,
    notes: int = 2,
    examples: int = 0,
    example_domains: Sequence[str] | None = None,
    exclude_example: str | None = None,
) -> SchemaContext:
    """Tables ranked by hybrid search (plus the join neighbours of the best ones), within a budget.

    Small schemas (at most `include_all_below` tables in scope) are shown whole. `domains` prunes the
    schema to the question's domains (for several databases in one store, the database label).
    """
    vector = embedder.embed_queries([question])[0]
    scope = _scope_tables(store, domains, audiences)
    by_name = {t.name: t for t in scope}
    context = SchemaContext(tables_in_scope=sorted(by_name))
    if len(scope) <= include_all_below:
        chosen = list(scope)
    else:
        hits = store.search(SearchQuery(text=question, embedding=vector, audiences=audiences, domains=domains,
                                        kinds=(SCHEMA_KIND,), top_k=max_tables + 4, candidates=60))
        ranked = [h.source.rsplit("/", 1)[-1] for h in hits if h.source.startswith(TABLE_PREFIX)]
        ranked = [n for n in ranked if n in by_name]
        order: list[str] = []
        for name in ranked[:max_tables]:
            if name not in order:
                order.append(name)
        # Joins need the tables in between: add neighbours of the two best tables after them.
        for name in ranked[:2]:
            for neighbour in by_name[name].neighbours:
                if neighbour in by_name and neighbour not in order and len(order) < max_tables + 2:
                    order.append(neighbour)
        chosen = [by_name[n] for n in order]
    used = 0
    for table in chosen:
        if used + len(table.text) > char_budget and context.tables:
            continue
        context.tables.append(table)
        used += len(table.text)
    if notes:
        hits = store.search(SearchQuery(text=question, embedding=vector, audiences=audiences,
                                        kinds=(SCHEMA_KIND,), top_k=notes + max_tables, candidates=60))
        context.notes = [h.text for h in hits if h.source.startswith(NOTES_PREFIX)][:notes]
    if examples:
        hits = store.search(SearchQuery(text=question, embedding=vector, audiences=audiences,
                                        domains=example_domains, kinds=(EXAMPLE_KIND,), top_k=examples + 1))
        for hit in hits:
            q, _, sql = hit.text.partition("\nSQL: ")
            q = q.removeprefix("Question: ")
            if exclude_example is not None and q.strip() == exclude_example.strip():
                continue
            context.examples.append((q, sql))
        context.examples = context.examples[:examples]
    return context


def add_solved_example(
    store: VectorStore,
    embedder: Embedder,
    question: str,
    sql: str,
    *,
    domain: str = "analytics",
    audience: str = "internal",
) -> str:
    """Store a question→SQL pair a user marked correct; later similar questions see it as an example.

    Idempotent per (question, sql). Returns the document source.
    """
    text = f"Question: {question.strip()}\nSQL: {sql.strip()}"
    digest = hashlib.sha256(f"{domain}\0{text}".encode()).hexdigest()
    source = f"example://{domain}/{digest[:24]}"
    record = DocumentRecord(source=source, title=question.strip()[:200], domain=domain, audience=audience,
                            language="en", content_hash=digest, kind=EXAMPLE_KIND,
                            metadata={"type": "solved_example"})
    store.upsert_document(record, [ChunkRecord(text=text, ordinal=0)], embedder.embed_passages([question]))
    return source
