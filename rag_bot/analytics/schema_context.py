"""Schema context for SQL generation: the tables a question needs, business definitions and solved
examples, retrieved from the store instead of pasting the whole schema (100+ tables must still fit)."""

# ruff: noqa: E501  (prompt and message catalogue lines are kept whole)

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rag_bot.embeddings import Embedder
from rag_bot.store import ChunkRecord, DocumentRecord, SearchQuery, VectorStore

logger = logging.getLogger(__name__)

SCHEMA_KIND = "schema"
EXAMPLE_KIND = "sql_example"
TABLE_PREFIX = "schema://"
NOTES_PREFIX = "schema-notes://"


@dataclass(frozen=True)
class TableDoc:
    name: str  # as queries must write it (`orders`, `consumer_div.customers`)
    text: str
    neighbours: tuple[str, ...] = ()
    database: str = ""
    source: str = ""
    schema: str = "public"
    columns: tuple[str, ...] = ()
    foreign_keys: tuple[tuple[str, str, str], ...] = ()  # (column, referenced table, referenced column)


@dataclass
class SchemaContext:
    """What the prompt shows about the database for one question."""

    tables: list[TableDoc] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    examples: list[tuple[str, str]] = field(default_factory=list)
    tables_in_scope: list[str] = field(default_factory=list)
    scope: list[TableDoc] = field(default_factory=list)  # every table the question may use, shown or not

    @property
    def table_names(self) -> list[str]:
        return [t.name for t in self.tables]

    def render(self) -> str:
        parts = ["\n\n".join(t.text for t in self.tables)]
        if self.notes:
            parts.append("Business definitions:\n" + "\n\n".join(self.notes))
        return "\n\n".join(p for p in parts if p)


def scope_tables(store: VectorStore, domains: Sequence[str] | None, audiences: Sequence[str]) -> list[TableDoc]:
    """Every table document in scope (cheap: one row per table, no embeddings read)."""
    sql = (
        "SELECT d.metadata, c.text, d.source FROM documents d "
        "JOIN chunks c ON c.document_id = d.id WHERE d.kind = %s AND d.source LIKE %s "
        "AND d.audience = ANY(%s)"
    )
    params: list[object] = [SCHEMA_KIND, TABLE_PREFIX + "%", list(audiences)]
    if domains:
        sql += " AND d.domain = ANY(%s)"
        params.append(list(domains))
    rows = store.conn.execute(sql + " ORDER BY d.metadata->>'table'", params).fetchall()
    return [
        TableDoc(
            name=str(meta.get("table")), text=str(text), neighbours=tuple(meta.get("neighbours") or ()),
            database=str(meta.get("database") or ""), source=str(source), schema=str(meta.get("schema") or "public"),
            columns=tuple(meta.get("columns") or ()),
            foreign_keys=tuple(tuple(fk) for fk in meta.get("foreign_keys") or ()),
        )
        for meta, text, source in rows
    ]


def _scope_notes(store: VectorStore, databases: Sequence[str], audiences: Sequence[str]) -> list[str]:
    """Every business-definition section of these databases, in document order."""
    rows = store.conn.execute(
        "SELECT c.text FROM documents d JOIN chunks c ON c.document_id = d.id WHERE d.kind = %s "
        "AND d.source LIKE %s AND d.metadata->>'database' = ANY(%s) AND d.audience = ANY(%s) "
        "ORDER BY d.source, c.ordinal",
        [SCHEMA_KIND, NOTES_PREFIX + "%", list(databases), list(audiences)],
    ).fetchall()
    return [str(text) for (text,) in rows]


def _mentioned(text: str, names: Sequence[str]) -> list[str]:
    """Table names that a definition or an example's SQL mentions (word match)."""
    return [n for n in names if re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", text)]


def retrieve_schema_context(
    question: str,
    *,
    store: VectorStore,
    embedder: Embedder,
    domains: Sequence[str] | None = None,
    audiences: Sequence[str] = ("public", "internal"),
    max_tables: int = 6,
    char_budget: int = 12000,
    notes: int = 2,
    notes_char_budget: int = 8000,
    examples: int = 0,
    example_domains: Sequence[str] | None = None,
) -> SchemaContext:
    """The tables a question needs, the business definitions and solved examples closest to it.

    A schema whose tables fit `char_budget` is shown whole, in name order, and definitions that fit
    `notes_char_budget` likewise: the prompt then starts with the same text for every question, so the LLM server's prefix cache (llama.cpp slots, vLLM
    automatic prefix caching) skips most of the prompt. Larger schemas (100+ tables) are pruned:
    tables ranked by hybrid search, plus the tables the retrieved definitions and examples use, plus
    the join neighbours of the two best, within the budget. `domains` restricts the schema to the
    question's domains (with several databases in one store, the database label).
    """
    vector = embedder.embed_queries([question])[0]
    scope = scope_tables(store, domains, audiences)
    by_name = {t.name: t for t in scope}
    context = SchemaContext(tables_in_scope=sorted(by_name), scope=scope)
    databases = sorted({t.database for t in scope})
    all_notes = _scope_notes(store, databases, audiences) if notes else []
    if sum(len(n) for n in all_notes) <= notes_char_budget:
        context.notes = all_notes  # fixed text: cached with the schema
    elif notes:
        hits = store.search(SearchQuery(text=question, embedding=vector, audiences=audiences,
                                        kinds=(SCHEMA_KIND,), top_k=notes + max_tables, candidates=60))
        context.notes = [h.text for h in hits if h.source.startswith(NOTES_PREFIX) and h.text in all_notes][:notes]
    if examples:
        hits = store.search(SearchQuery(text=question, embedding=vector, audiences=audiences,
                                        domains=example_domains, kinds=(EXAMPLE_KIND,), top_k=examples))
        context.examples += [parse_example(hit.text) for hit in hits]
    if sum(len(t.text) for t in scope) <= char_budget:
        context.tables = sorted(scope, key=lambda t: t.name)
        return context
    hits = store.search(SearchQuery(text=question, embedding=vector, audiences=audiences, domains=domains,
                                    kinds=(SCHEMA_KIND,), top_k=max_tables + 4, candidates=60))
    by_source = {t.source: t.name for t in scope}
    ranked = [by_source[h.source] for h in hits if h.source in by_source]
    ranked = list(dict.fromkeys(n for n in ranked if n in by_name))
    used_elsewhere = _mentioned(" ".join(context.notes[:1] + [sql for _, sql in context.examples]), sorted(by_name))
    order = list(dict.fromkeys(ranked[:2] + used_elsewhere + ranked[2:max_tables]))
    for name in ranked[:2]:  # joins need the tables in between
        order += [n for n in by_name[name].neighbours if n in by_name and n not in order]
    used = 0
    for name in order[: max_tables + 2]:
        table = by_name[name]
        if used + len(table.text) > char_budget and context.tables:
            continue
        context.tables.append(table)
        used += len(table.text)
    context.tables.sort(key=lambda t: t.name)
    return context


def parse_example(text: str) -> tuple[str, str]:
    """(question, sql) of a stored solved example's text, as `add_solved_example` writes it."""
    question, _, sql = text.partition("\nSQL: ")
    return question.removeprefix("Question: "), sql


_WORDS = re.compile(r"\w+")


def question_key(question: str) -> tuple[str, ...]:
    """A question's words in any case, without punctuation: two questions are the same question when
    their keys are equal."""
    return tuple(_WORDS.findall(question.casefold()))


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
    if store.document_hashes(source, kind=EXAMPLE_KIND).get(source) == digest:
        return source  # already stored: nothing to embed
    record = DocumentRecord(source=source, title=question.strip()[:200], domain=domain, audience=audience,
                            language="en", content_hash=digest, kind=EXAMPLE_KIND,
                            metadata={"type": "solved_example"})
    store.upsert_document(record, [ChunkRecord(text=text, ordinal=0)], embedder.embed_passages([question]))
    return source


def add_solved_examples_file(path: Path, store: VectorStore, embedder: Embedder) -> int:
    """Store the question→SQL pairs of a YAML file (a list of {question, sql}); returns how many."""
    import yaml

    items = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    for item in items:
        add_solved_example(store, embedder, str(item["question"]), str(item["sql"]))
    return len(items)
