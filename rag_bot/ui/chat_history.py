"""Chat history in PostgreSQL: the tables Chainlit's SQLAlchemy data layer writes, and readers for them.

Chainlit does not create its tables. `migrate_chat_history` creates them idempotently in their own
schema (default `chainlit`) of the store's database: the schema from Chainlit's SQLAlchemy data layer
docs, plus the `steps` columns later Chainlit versions write (`modes` since 2.9.4, `autoCollapse`
since 2.10; the layer builds its INSERTs from the step's keys, so a missing column loses the step),
plus `element_files`, where element bytes (charts, tables, source passages) are kept.

Every assistant answer carries an `AnswerMeta` in its step metadata (key `rag_bot`): the question,
the route and, for answers the model wrote from a prompt, that exact prompt. Resuming a thread
rebuilds the conversation from it; `rag-bot export finetune` turns rated answers into training data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg

from rag_bot.assistant.conversation import Conversation, Route
from rag_bot.embeddings import Embedder
from rag_bot.errors import ConfigError
from rag_bot.store import VectorStore

META_KEY = "rag_bot"

# Chainlit's documented schema (docs.chainlit.io/data-layers/sqlalchemy) with the columns added since.
_TABLES = (
    """CREATE TABLE IF NOT EXISTS users (
        "id" UUID PRIMARY KEY,
        "identifier" TEXT NOT NULL UNIQUE,
        "metadata" JSONB NOT NULL,
        "createdAt" TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS threads (
        "id" UUID PRIMARY KEY,
        "createdAt" TEXT,
        "name" TEXT,
        "userId" UUID,
        "userIdentifier" TEXT,
        "tags" TEXT[],
        "metadata" JSONB,
        FOREIGN KEY ("userId") REFERENCES users("id") ON DELETE CASCADE
    )""",
    """CREATE TABLE IF NOT EXISTS steps (
        "id" UUID PRIMARY KEY,
        "name" TEXT NOT NULL,
        "type" TEXT NOT NULL,
        "threadId" UUID NOT NULL,
        "parentId" UUID,
        "streaming" BOOLEAN NOT NULL,
        "waitForAnswer" BOOLEAN,
        "isError" BOOLEAN,
        "metadata" JSONB,
        "tags" TEXT[],
        "input" TEXT,
        "output" TEXT,
        "createdAt" TEXT,
        "command" TEXT,
        "start" TEXT,
        "end" TEXT,
        "generation" JSONB,
        "showInput" TEXT,
        "language" TEXT,
        "indent" INT,
        "defaultOpen" BOOLEAN,
        FOREIGN KEY ("threadId") REFERENCES threads("id") ON DELETE CASCADE
    )""",
    """CREATE TABLE IF NOT EXISTS elements (
        "id" UUID PRIMARY KEY,
        "threadId" UUID,
        "type" TEXT,
        "url" TEXT,
        "chainlitKey" TEXT,
        "name" TEXT NOT NULL,
        "display" TEXT,
        "objectKey" TEXT,
        "size" TEXT,
        "page" INT,
        "language" TEXT,
        "forId" UUID,
        "mime" TEXT,
        "props" JSONB,
        FOREIGN KEY ("threadId") REFERENCES threads("id") ON DELETE CASCADE
    )""",
    """CREATE TABLE IF NOT EXISTS feedbacks (
        "id" UUID PRIMARY KEY,
        "forId" UUID NOT NULL,
        "threadId" UUID NOT NULL,
        "value" INT NOT NULL,
        "comment" TEXT,
        FOREIGN KEY ("threadId") REFERENCES threads("id") ON DELETE CASCADE
    )""",
    # Columns newer Chainlit versions write; ADD COLUMN IF NOT EXISTS also upgrades older schemas.
    'ALTER TABLE steps ADD COLUMN IF NOT EXISTS "command" TEXT',
    'ALTER TABLE steps ADD COLUMN IF NOT EXISTS "defaultOpen" BOOLEAN',
    'ALTER TABLE steps ADD COLUMN IF NOT EXISTS "modes" JSONB',
    'ALTER TABLE steps ADD COLUMN IF NOT EXISTS "autoCollapse" BOOLEAN',
    'ALTER TABLE elements ADD COLUMN IF NOT EXISTS "autoPlay" BOOLEAN',
    'ALTER TABLE elements ADD COLUMN IF NOT EXISTS "playerConfig" JSONB',
    # Ours: element bytes, so elements survive without S3/GCS/Azure.
    """CREATE TABLE IF NOT EXISTS element_files (
        object_key TEXT PRIMARY KEY,
        mime TEXT NOT NULL,
        data BYTEA NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
    'CREATE INDEX IF NOT EXISTS steps_thread_idx ON steps ("threadId")',
    'CREATE INDEX IF NOT EXISTS elements_thread_idx ON elements ("threadId")',
    'CREATE INDEX IF NOT EXISTS feedbacks_for_idx ON feedbacks ("forId")',
    'CREATE INDEX IF NOT EXISTS threads_user_idx ON threads ("userId")',
)


def schema_name(name: str) -> str:
    # Identifiers cannot be query parameters; validate before interpolating into DDL.
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ConfigError(f"RAG_BOT_CHAT_SCHEMA={name!r}: use lowercase letters, digits and '_'.")
    return name


def migrate_chat_history(conn: psycopg.Connection, schema: str) -> None:
    """Create the schema and its tables if missing (idempotent; safe when two processes start at once)."""
    schema = schema_name(schema)
    with conn.transaction():
        # CREATE ... IF NOT EXISTS is not atomic under concurrency; one migrator at a time.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('rag_bot.ui.chat_history'))")
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(f'SET LOCAL search_path TO "{schema}"')
        for statement in _TABLES:
            conn.execute(statement)


# -- what an answer step carries ------------------------------------------------------------------
@dataclass
class AnswerMeta:
    """Stored in an assistant message's metadata under `META_KEY`."""

    question: str
    profile: str
    intent: str | None = None
    domains: list[str] = field(default_factory=list)
    language: str = "en"
    # The text the model generated, without the sources footer ("" for canned replies).
    answer: str = ""
    # The exact messages the model answered (docs answers); None when no model wrote the text.
    prompt: list[dict[str, str]] | None = None
    sql: str | None = None
    sql_ok: bool = False  # the SQL ran and returned a result

    def to_metadata(self) -> dict[str, Any]:
        return {META_KEY: asdict(self)}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any] | str | None) -> AnswerMeta | None:
        if isinstance(metadata, str):
            try:
                metadata = json.loads(metadata)
            except json.JSONDecodeError:
                return None
        if not isinstance(metadata, Mapping):  # None, or JSON that is not an object ("[]", "3")
            return None
        raw = metadata.get(META_KEY)
        if not isinstance(raw, dict) or not isinstance(raw.get("question"), str):
            return None
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        known.setdefault("profile", "")
        try:
            return cls(**known)
        except TypeError:
            return None

    def route(self) -> Route | None:
        """The turn's route, enough for follow-ups to inherit its intent, domains and language."""
        from rag_bot.profiles import INTENTS

        if self.intent not in INTENTS:
            return None
        return Route(intent=self.intent, domains=tuple(self.domains), intent_confidence=1.0,
                     domain_confidence=1.0, path="fast", language=self.language)


def conversation_from_steps(steps: Iterable[Mapping[str, Any]], profile: str | None = None) -> Conversation:
    """Rebuild a conversation from a stored thread's steps (Chainlit step dicts).

    Each assistant answer becomes a turn: with its stored question and route when it carries an
    `AnswerMeta`, otherwise paired with the user message before it. With `profile`, answers given
    under another profile are left out (an internal answer must not reach a public bot's context).
    """
    conversation = Conversation()
    question: str | None = None
    for step in sorted(steps, key=lambda s: str(s.get("createdAt") or "")):
        kind = step.get("type")
        if kind == "user_message":
            question = str(step.get("output") or "")
        elif kind == "assistant_message":
            meta = AnswerMeta.from_metadata(step.get("metadata"))
            if meta is not None:
                if profile is None or meta.profile == profile:
                    conversation.add(meta.question, meta.route(), str(step.get("output") or ""))
            elif question:
                conversation.add(question, None, str(step.get("output") or ""))
            question = None
    return conversation


# -- rated answers, for fine-tuning ---------------------------------------------------------------
@dataclass(frozen=True)
class RatedAnswer:
    step_id: str
    thread_id: str
    created_at: str
    rating: int
    comment: str | None
    output: str
    meta: AnswerMeta | None
    question: str  # from the metadata, or the user message before the answer


def iter_rated_answers(conn: psycopg.Connection, schema: str, *, min_rating: int) -> Iterator[RatedAnswer]:
    """Assistant answers with feedback `value >= min_rating` (Chainlit: 1 = thumbs up, 0 = down), oldest first."""
    schema = schema_name(schema)
    rows = conn.execute(
        f"""
        SELECT s.id::text, s."threadId"::text, coalesce(s."createdAt", ''), f.value, f.comment,
               coalesce(s.output, ''), s.metadata,
               (SELECT u.output FROM "{schema}".steps u
                 WHERE u."threadId" = s."threadId" AND u.type = 'user_message'
                   AND coalesce(u."createdAt", '') <= coalesce(s."createdAt", '')
                 ORDER BY u."createdAt" DESC LIMIT 1)
        FROM "{schema}".feedbacks f
        JOIN "{schema}".steps r ON r.id = f."forId"
        -- Chainlit's UI rates the turn (the `on_message` run step); API clients may rate the message.
        JOIN LATERAL (SELECT * FROM "{schema}".steps m
                       WHERE m.type = 'assistant_message' AND (m.id = r.id OR m."parentId" = r.id)
                       ORDER BY m."createdAt" DESC LIMIT 1) s ON true
        WHERE f.value >= %s
        ORDER BY s."createdAt", s.id
        """,
        (min_rating,),
    ).fetchall()
    for step_id, thread_id, created_at, value, comment, output, metadata, user_text in rows:
        meta = AnswerMeta.from_metadata(metadata)
        question = meta.question if meta is not None else str(user_text or "")
        yield RatedAnswer(step_id, thread_id, created_at, int(value), comment, output, meta, question)


def chat_messages(answer: RatedAnswer) -> list[dict[str, str]] | None:
    """The answer as a chat-format training example, or None when it is not one.

    Only answers the model wrote from a stored prompt qualify: the prompt is what the model saw (with
    the retrieved passages), so the example teaches answering from context. Canned replies and data
    answers (whose numbers come from a query result that is not in any prompt) are left out.
    """
    meta = answer.meta
    if meta is None or not meta.prompt or not meta.answer.strip():
        return None
    messages = [{"role": m["role"], "content": m["content"]} for m in meta.prompt if m.get("content")]
    if not messages or messages[-1]["role"] != "user":
        return None
    return [*messages, {"role": "assistant", "content": meta.answer.strip()}]


def skip_reason(answer: RatedAnswer) -> str:
    meta = answer.meta
    if meta is None:
        return "no rag_bot metadata (answered before it was recorded)"
    if meta.sql:
        return "data answer (its numbers come from a query result, not from a prompt)"
    if not meta.prompt:
        return "fixed reply (not written by the model)"
    return "empty answer"


def add_rated_example(meta: AnswerMeta, store: VectorStore, embedder: Embedder) -> str | None:
    """Store a well-rated data answer's question and SQL as a solved example (only if the SQL ran)."""
    if not (meta.sql and meta.sql_ok and meta.question.strip()):
        return None
    from rag_bot.analytics.schema_context import add_solved_example

    return add_solved_example(store, embedder, meta.question, meta.sql)


def prompt_messages(messages: Sequence[Any]) -> list[dict[str, str]]:
    """ChatMessage objects -> plain dicts for the metadata."""
    return [{"role": str(m.role), "content": str(m.content)} for m in messages]
