"""Vector store: documents and their chunks in PostgreSQL + pgvector, with full-text search beside it.

Why our own small store on psycopg 3 + the `pgvector` package instead of llama-index's
`PGVectorStore`: that store fails every HNSW query through psycopg 3 (`SET hnsw.ef_search = $1` is
sent as a bind parameter), pins SQLAlchemy < 2.1 and needs psycopg2 + asyncpg beside psycopg 3. We
also need things it does not do in one query: audience and domain filters in the SQL `WHERE`
(so a public user can never receive an internal chunk), hybrid vector + Russian-aware full-text
ranking fused in SQL, and per-document content hashes for incremental ingestion.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from rag_bot.db import connect
from rag_bot.errors import DatabaseUnavailable, EmbeddingError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = "1"

# The 'russian' text-search configuration stems Cyrillic words with the Russian snowball stemmer
# and ASCII words with the English one, so one tsvector serves both languages of the demo.
FTS_CONFIG = "russian"

_VECTOR_INDEX = (
    "CREATE INDEX IF NOT EXISTS chunks_embedding_hnsw "
    "ON chunks USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
)


@dataclass(frozen=True)
class DocumentRecord:
    """One source document (file, URI or DB table description)."""

    source: str
    title: str
    domain: str
    audience: str  # "public" | "internal"
    language: str
    content_hash: str
    kind: str = "doc"  # "doc" | "schema"
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChunkRecord:
    """A piece of a document, the unit of retrieval."""

    text: str
    ordinal: int
    heading: str = ""
    page: int | None = None


@dataclass(frozen=True)
class SearchHit:
    chunk_id: int
    text: str
    source: str
    title: str
    domain: str
    audience: str
    heading: str
    page: int | None
    ordinal: int
    score: float
    # Cosine similarity of the chunk to the query embedding: absolute evidence of relevance (the
    # fused `score` only ranks), e.g. "nothing in the documents is close to this question".
    similarity: float = 0.0


@dataclass(frozen=True)
class SearchQuery:
    """A retrieval request; filters are applied inside SQL."""

    text: str
    embedding: np.ndarray
    audiences: Sequence[str] = ("public", "internal")
    domains: Sequence[str] | None = None
    kinds: Sequence[str] = ("doc",)
    top_k: int = 5
    candidates: int = 40
    # Reciprocal-rank fusion: score = vector_weight/(rrf_k + rank_vec) + text_weight/(rrf_k + rank_fts).
    rrf_k: int = 60
    vector_weight: float = 1.0
    text_weight: float = 1.0
    # "all": full text searches every allowed chunk (finds lexical-only matches; cost grows with the
    # number of matching rows). "candidates": full text only re-ranks the vector candidates (cost
    # bounded by `candidates`).
    text_scope: Literal["all", "candidates"] = "all"
    # The query's language ("ru"/"en"): full text then ranks only documents in that language. Word
    # overlap between a question and a passage in the other language (names, numbers, loanwords) is
    # noise, and fusing it lowered cross-lingual recall@1 below plain vector search. None: all.
    language: str | None = None


class VectorStore:
    """PostgreSQL + pgvector store. One instance per process; it keeps one connection."""

    def __init__(self, url: str, *, embedder_name: str, dim: int) -> None:
        self._url = url
        self._embedder_name = embedder_name
        self._dim = dim
        self._conn: psycopg.Connection | None = None

    # -- connection and schema -------------------------------------------------------------------
    @property
    def conn(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._url, autocommit=True)
            register_vector(self._conn)
            self._conn.execute("SET hnsw.ef_search = 100")
            # pgvector 0.8: keep scanning the HNSW graph until enough rows pass the WHERE filters.
            self._conn.execute("SET hnsw.iterative_scan = relaxed_order")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def migrate(self) -> None:
        """Create the extension and tables (idempotent); refuse a store built with another embedder."""
        with connect(self._url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS rag_meta (key text PRIMARY KEY, value text NOT NULL)"
            )
            meta: dict[str, str] = dict(conn.execute("SELECT key, value FROM rag_meta").fetchall())
            if meta.get("embedder") and (
                meta["embedder"] != self._embedder_name or int(meta["dim"]) != self._dim
            ):
                raise EmbeddingError(
                    f"The store was built with the embedding model '{meta['embedder']}' "
                    f"({meta['dim']}-d) but the bot is configured with '{self._embedder_name}' "
                    f"({self._dim}-d). Mixing them would corrupt search. Either set the embedder back, "
                    "or rebuild the store with `rag-bot ingest docs PATH --reembed`."
                )
            conn.execute(
                f"""
                CREATE TABLE IF NOT EXISTS documents (
                    id bigserial PRIMARY KEY,
                    source text NOT NULL UNIQUE,
                    title text NOT NULL,
                    domain text NOT NULL,
                    audience text NOT NULL CHECK (audience IN ('public', 'internal')),
                    language text NOT NULL,
                    kind text NOT NULL DEFAULT 'doc',
                    content_hash text NOT NULL,
                    metadata jsonb NOT NULL DEFAULT '{{}}',
                    ingested_at timestamptz NOT NULL DEFAULT now()
                );
                CREATE TABLE IF NOT EXISTS chunks (
                    id bigserial PRIMARY KEY,
                    document_id bigint NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
                    ordinal int NOT NULL,
                    text text NOT NULL,
                    heading text NOT NULL DEFAULT '',
                    page int,
                    domain text NOT NULL,
                    audience text NOT NULL,
                    kind text NOT NULL DEFAULT 'doc',
                    embedding vector({self._dim}) NOT NULL,
                    tsv tsvector GENERATED ALWAYS AS (
                        to_tsvector('{FTS_CONFIG}', coalesce(heading, '') || ' ' || text)
                    ) STORED
                );
                {_VECTOR_INDEX};
                CREATE INDEX IF NOT EXISTS chunks_tsv_gin ON chunks USING gin (tsv);
                CREATE INDEX IF NOT EXISTS chunks_filter ON chunks (kind, audience, domain);
                CREATE INDEX IF NOT EXISTS chunks_document ON chunks (document_id, ordinal);
                """
            )
            conn.execute(
                "INSERT INTO rag_meta VALUES ('embedder', %s), ('dim', %s), ('schema_version', %s) "
                "ON CONFLICT (key) DO NOTHING",
                (self._embedder_name, str(self._dim), SCHEMA_VERSION),
            )

    def reset(self) -> None:
        """Drop everything the store owns (used by --reembed when the embedding model changes)."""
        with connect(self._url, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS chunks, documents, rag_meta CASCADE")

    # -- writes ----------------------------------------------------------------------------------
    @contextmanager
    def bulk_load(self) -> Iterator[bool]:
        """Into an empty store, write without the HNSW index and build it once at the end.

        pgvector's advice for initial loads: building the graph over 1,000 rows at once took a sixth
        of the CPU of inserting them one by one (the gap grows with size), CPU that would otherwise
        compete with the embedder. Yields whether it applies. If the process dies in between, search
        still works, exactly and slower, until the next start's `migrate()` builds the index.
        """
        row = self.conn.execute("SELECT EXISTS (SELECT 1 FROM chunks)").fetchone()
        empty = row is not None and not row[0]
        if empty:
            self.conn.execute("DROP INDEX IF EXISTS chunks_embedding_hnsw")
        try:
            yield empty
        finally:
            if empty:
                self.conn.execute(_VECTOR_INDEX)

    def document_hashes(self, source_prefix: str = "", kind: str = "doc") -> dict[str, str]:
        """source -> content hash of every stored document under a prefix (for incremental sync)."""
        rows = self.conn.execute(
            "SELECT source, content_hash FROM documents WHERE kind = %s AND source LIKE %s",
            (kind, source_prefix.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%"),
        ).fetchall()
        return dict(rows)

    def upsert_document(
        self, document: DocumentRecord, chunks: Sequence[ChunkRecord], embeddings: np.ndarray
    ) -> None:
        """Replace a document and exactly its chunks, atomically (a crash leaves the old version)."""
        self.upsert_documents([(document, chunks, embeddings)])

    def upsert_documents(
        self, items: Sequence[tuple[DocumentRecord, Sequence[ChunkRecord], np.ndarray]]
    ) -> None:
        """Replace several documents and exactly their chunks in one transaction: all or none.

        Three statements per batch, whatever its size: one DELETE, one multi-row INSERT of the
        documents, one binary COPY of all their chunks (a statement per chunk cost the ingest a
        third of its time on small documents).
        """
        for _, chunks, embeddings in items:
            if len(chunks) != len(embeddings):
                raise ValueError("one embedding per chunk is required")
        items = list({document.source: (document, c, e) for document, c, e in items}.values())  # last wins
        if not items:
            return
        documents = [document for document, _, _ in items]
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute("DELETE FROM documents WHERE source = ANY(%s)", ([d.source for d in documents],))
            rows = cur.execute(
                "INSERT INTO documents (source, title, domain, audience, language, kind, content_hash, metadata) "
                "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], "
                "%s::text[], %s::jsonb[]) RETURNING id, source",
                (
                    [d.source for d in documents],
                    [d.title for d in documents],
                    [d.domain for d in documents],
                    [d.audience for d in documents],
                    [d.language for d in documents],
                    [d.kind for d in documents],
                    [d.content_hash for d in documents],
                    [json.dumps(d.metadata, ensure_ascii=False, default=str) for d in documents],
                ),
            ).fetchall()
            ids = {source: doc_id for doc_id, source in rows}
            with cur.copy(
                "COPY chunks (document_id, ordinal, text, heading, page, domain, audience, kind, embedding) "
                "FROM STDIN WITH (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["int8", "int4", "text", "text", "int4", "text", "text", "text", "vector"])
                for document, chunks, embeddings in items:
                    for chunk, vector in zip(chunks, embeddings, strict=True):
                        copy.write_row((
                            ids[document.source], chunk.ordinal, chunk.text, chunk.heading, chunk.page,
                            document.domain, document.audience, document.kind,
                            np.asarray(vector, dtype=np.float32),
                        ))

    def delete_documents(self, sources: Sequence[str]) -> int:
        """Delete documents (and, by cascade, their chunks); returns how many were removed."""
        if not sources:
            return 0
        cur = self.conn.execute("DELETE FROM documents WHERE source = ANY(%s)", (list(sources),))
        return cur.rowcount

    # -- reads -----------------------------------------------------------------------------------
    def search(self, query: SearchQuery) -> list[SearchHit]:
        """Hybrid search: HNSW cosine top-N and full-text top-N, fused by weighted reciprocal rank."""
        filters = "c.kind = ANY(%(kinds)s) AND c.audience = ANY(%(audiences)s)"
        if query.domains:
            filters += " AND c.domain = ANY(%(domains)s)"
        # The vector candidates already passed the filters.
        fts_scope = filters if query.text_scope == "all" else "c.id IN (SELECT id FROM vec)"
        if query.language:
            fts_scope += " AND c.document_id IN (SELECT id FROM documents WHERE language = %(language)s)"
        sql = f"""
            WITH vec AS (
                SELECT c.id, row_number() OVER () AS rank
                FROM (SELECT c.id FROM chunks c WHERE {filters}
                      ORDER BY c.embedding <=> %(embedding)s LIMIT %(n)s) c
            ),
            q AS (
                SELECT replace(plainto_tsquery('{FTS_CONFIG}', %(text)s)::text, '&', '|') AS expr
            ),
            fts AS (
                SELECT c.id, row_number() OVER (ORDER BY ts_rank_cd(c.tsv, q.expr::tsquery) DESC) AS rank
                FROM chunks c, q
                WHERE q.expr <> '' AND c.tsv @@ q.expr::tsquery AND {fts_scope}
                ORDER BY ts_rank_cd(c.tsv, q.expr::tsquery) DESC LIMIT %(n)s
            ),
            fused AS (
                SELECT id, sum(weight / (%(rrf_k)s + rank)) AS score
                FROM (SELECT id, rank, %(vector_weight)s::float8 AS weight FROM vec
                      UNION ALL SELECT id, rank, %(text_weight)s::float8 FROM fts) ranked
                GROUP BY id
            )
            SELECT c.id, c.text, d.source, d.title, c.domain, c.audience, c.heading, c.page,
                   c.ordinal, f.score, 1 - (c.embedding <=> %(embedding)s) AS similarity
            FROM fused f JOIN chunks c ON c.id = f.id JOIN documents d ON d.id = c.document_id
            ORDER BY f.score DESC, c.id
            LIMIT %(k)s
        """
        params = {
            "embedding": np.asarray(query.embedding, dtype=np.float32),
            "text": query.text,
            "kinds": list(query.kinds),
            "audiences": list(query.audiences),
            "domains": list(query.domains or []),
            "n": query.candidates,
            "k": query.top_k,
            "rrf_k": query.rrf_k,
            "vector_weight": query.vector_weight,
            "text_weight": query.text_weight,
            "language": query.language,
        }
        try:
            rows = self.conn.execute(sql, params).fetchall()
        except psycopg.OperationalError as exc:
            self.close()
            raise DatabaseUnavailable(
                "Lost the connection to PostgreSQL while searching. It will reconnect on the next "
                "question; if this repeats, check the server (`rag-bot doctor`)."
            ) from exc
        return [SearchHit(*row) for row in rows]

    def nearest_similarity(
        self,
        embedding: np.ndarray,
        *,
        audiences: Sequence[str] = ("public", "internal"),
        domains: Sequence[str] | None = None,
        kinds: Sequence[str] = ("doc",),
    ) -> float:
        """Cosine similarity of the closest allowed chunk (0.0 when there is none): does any document
        the asker may read talk about this at all?"""
        filters = "kind = ANY(%(kinds)s) AND audience = ANY(%(audiences)s)"
        if domains:
            filters += " AND domain = ANY(%(domains)s)"
        params = {"e": np.asarray(embedding, dtype=np.float32), "kinds": list(kinds),
                  "audiences": list(audiences), "domains": list(domains or [])}
        try:
            row = self.conn.execute(
                f"SELECT 1 - (embedding <=> %(e)s) FROM chunks WHERE {filters} ORDER BY embedding <=> %(e)s LIMIT 1",
                params,
            ).fetchone()
        except psycopg.OperationalError as exc:
            self.close()
            raise DatabaseUnavailable(
                "Lost the connection to PostgreSQL while searching. It will reconnect on the next "
                "question; if this repeats, check the server (`rag-bot doctor`)."
            ) from exc
        return float(row[0]) if row else 0.0

    def count_chunks(self) -> int:
        row = self.conn.execute("SELECT count(*) FROM chunks").fetchone()
        return int(row[0]) if row else 0
