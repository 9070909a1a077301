"""Conversations in PostgreSQL, so that no chat state lives only in one process's memory.

Any replica of the app can continue any conversation: it loads the turns before answering and
appends the new turn after. The table lives in the vector store's database:

    conversations(id text PRIMARY KEY, profile text, turns jsonb, updated_at timestamptz)

It is created on first use (idempotent, safe when several replicas start at once). Ids are opaque
strings chosen by the caller, who also namespaces them: the HTTP API stores `api:<key id>:<id>` so
one API key can never read another's conversations; the chat UI stores `chat:<thread uuid>`
(`chat_conversation_id`), so a chat client that picks its own thread id (Chainlit lets it) can never
name an API conversation, and an API caller can never name a chat thread.

The API is four functions, each taking a psycopg connection (autocommit or not; each call commits
its own write); `PgConversations` is the turn runner's store over them:

    load_conversation(conn, conversation_id, profile) -> Conversation   # empty when unknown
    append_turn(conn, conversation_id, profile, turn, keep=20)          # atomic; concurrent-safe
    save_conversation(conn, conversation_id, profile, conversation, keep=20)  # replace all turns
    delete_conversation(conn, conversation_id) -> bool

A stored turn keeps the message, the answer, the route without its embedding, and a data answer's
(sql, columns, rows) with values made JSON-safe (Decimal -> float, dates -> ISO strings), so that
"plot that" works on the next request whichever replica gets it.
"""

from __future__ import annotations

import base64
import logging
import math
import threading
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from rag_bot.assistant.conversation import Conversation, Route, Turn

logger = logging.getLogger(__name__)

DEFAULT_KEEP_TURNS = 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id text PRIMARY KEY,
    profile text NOT NULL,
    turns jsonb NOT NULL DEFAULT '[]'::jsonb,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS conversations_updated_at ON conversations (updated_at);
"""
# Replicas starting together would race on CREATE TABLE IF NOT EXISTS (a unique violation in
# pg_type); a transaction-scoped advisory lock serialises them. The key is arbitrary but fixed.
_SCHEMA_LOCK = 0x7261675F636F6E76  # "rag_conv"

_ready: set[tuple[str, str, str]] = set()
_ready_lock = threading.Lock()


CHAT_PREFIX = "chat:"


class InvalidThreadId(ValueError):
    """A chat thread id that is not the UUID Chainlit's own client generates."""


def chat_conversation_id(thread_id: str | None) -> str:
    """The conversations key of a chat thread; anything but a canonical UUID is refused.

    Chainlit accepts whatever thread id the browser sends; without this, `api:helpdesk:ticket-42`
    would append to (and poison) a help-desk ticket's conversation.
    """
    try:
        parsed = uuid.UUID(str(thread_id))
    except ValueError:
        raise InvalidThreadId(f"not a chat thread id: {thread_id!r}") from None
    if str(parsed) != str(thread_id).lower():
        raise InvalidThreadId(f"not a canonical chat thread id: {thread_id!r}")
    return CHAT_PREFIX + str(parsed)


def ensure_conversations_table(conn: psycopg.Connection) -> None:
    """Create the table if missing. Called by the functions below once per database and process."""
    info = conn.info
    key = (info.host, str(info.port), info.dbname)
    with _ready_lock:
        if key in _ready:
            return
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            conn.execute(_SCHEMA)
        _ready.add(key)


def load_conversation(conn: psycopg.Connection, conversation_id: str, profile: str) -> Conversation:
    """The stored turns, oldest first; an empty Conversation when the id is unknown.

    A conversation stored under another profile also loads as empty: turns answered for an internal
    profile must never reach a public bot's context.
    """
    ensure_conversations_table(conn)
    with _own_transaction(conn):
        row = conn.execute("SELECT profile, turns FROM conversations WHERE id = %s", (conversation_id,)).fetchone()
    if row is None:
        return Conversation()
    stored_profile, turns = row
    if stored_profile != profile:
        logger.warning("conversation %s belongs to profile %s, not %s: starting a new one",
                       conversation_id, stored_profile, profile)
        return Conversation()
    return Conversation(turns=[turn_from_json(t) for t in turns])


_APPEND = """
INSERT INTO conversations AS c (id, profile, turns) VALUES (%(id)s, %(profile)s, %(turns)s)
ON CONFLICT (id) DO UPDATE SET
    turns = CASE WHEN c.profile = EXCLUDED.profile THEN (
        SELECT coalesce(jsonb_agg(t.elem ORDER BY t.idx), '[]'::jsonb)
        FROM jsonb_array_elements(c.turns || EXCLUDED.turns) WITH ORDINALITY AS t(elem, idx)
        WHERE t.idx > jsonb_array_length(c.turns || EXCLUDED.turns) - %(keep)s
    ) ELSE EXCLUDED.turns END,
    profile = EXCLUDED.profile,
    updated_at = now()
"""


def append_turn(
    conn: psycopg.Connection, conversation_id: str, profile: str, turn: Turn, *, keep: int = DEFAULT_KEEP_TURNS
) -> None:
    """Add one turn and keep the last `keep`, in one statement: two replicas answering the same
    conversation at once both keep their turn. A conversation of another profile is replaced."""
    _write(conn, _APPEND, {"id": conversation_id, "profile": profile,
                           "turns": Jsonb([turn_to_json(turn)]), "keep": max(1, keep)})


_SAVE = """
INSERT INTO conversations (id, profile, turns) VALUES (%(id)s, %(profile)s, %(turns)s)
ON CONFLICT (id) DO UPDATE SET turns = EXCLUDED.turns, profile = EXCLUDED.profile, updated_at = now()
"""


def save_conversation(
    conn: psycopg.Connection, conversation_id: str, profile: str, conversation: Conversation,
    *, keep: int = DEFAULT_KEEP_TURNS,
) -> None:
    """Replace the stored turns with the conversation's last `keep` turns."""
    turns = conversation.turns[-keep:] if keep > 0 else []
    _write(conn, _SAVE, {"id": conversation_id, "profile": profile,
                         "turns": Jsonb([turn_to_json(t) for t in turns])})


def delete_conversation(conn: psycopg.Connection, conversation_id: str) -> bool:
    """Forget a conversation (e.g. at a customer's request); False when there was none."""
    ensure_conversations_table(conn)
    with _own_transaction(conn):
        cursor = conn.execute("DELETE FROM conversations WHERE id = %s", (conversation_id,))
    return cursor.rowcount > 0


def _write(conn: psycopg.Connection, sql: str, params: dict[str, Any]) -> None:
    ensure_conversations_table(conn)
    with _own_transaction(conn):
        conn.execute(sql, params)


def _own_transaction(conn: psycopg.Connection) -> AbstractContextManager[Any]:
    """Autocommit: each statement stands alone (and is atomic). Otherwise a transaction block that
    commits at its end, so a pooled connection never goes back with our write uncommitted (inside a
    transaction the caller opened, it is a savepoint and the caller commits)."""
    return nullcontext() if conn.autocommit else conn.transaction()


class PgConversations:
    """The turn runner's ConversationStore on PostgreSQL: each call takes a connection from `connection`
    (a pool's `connection` method, or a function that connects) and gives it back."""

    def __init__(
        self, connection: Callable[[], AbstractContextManager[psycopg.Connection]], *,
        keep_turns: int = DEFAULT_KEEP_TURNS,
    ) -> None:
        self._connection = connection
        self.keep_turns = keep_turns

    def load(self, conversation_id: str, profile: str) -> Conversation:
        with self._connection() as conn:
            return load_conversation(conn, conversation_id, profile)

    def append(self, conversation_id: str, profile: str, turn: Turn) -> None:
        with self._connection() as conn:
            append_turn(conn, conversation_id, profile, turn, keep=self.keep_turns)


# -- serialisation --------------------------------------------------------------------------------
_ROUTE_FIELDS = ("intent", "domains", "intent_confidence", "domain_confidence", "path", "language",
                 "sentiment", "clarifying_question", "permitted", "latency_s")


def turn_to_json(turn: Turn) -> dict[str, Any]:
    """A JSON-safe dict of the turn; the route's embedding is dropped (it is recomputed per message)."""
    route = None
    if turn.route is not None:
        route = {name: getattr(turn.route, name) for name in _ROUTE_FIELDS}
        route["domains"] = list(turn.route.domains)
    data = None
    if turn.data is not None:
        sql, columns, rows = turn.data
        data = {"sql": sql, "columns": list(columns), "rows": [[jsonable(v) for v in row] for row in rows]}
    return {"message": turn.message, "answer": turn.answer, "route": route, "data": data}


def turn_from_json(value: dict[str, Any]) -> Turn:
    route = None
    if value.get("route"):
        fields = {name: value["route"][name] for name in _ROUTE_FIELDS if name in value["route"]}
        fields["domains"] = tuple(fields.get("domains", ()))
        route = Route(**fields)
    data = None
    if value.get("data"):
        raw = value["data"]
        data = (raw["sql"], list(raw["columns"]), [tuple(row) for row in raw["rows"]])
    return Turn(message=value["message"], route=route, answer=value.get("answer", ""), data=data)


def jsonable(value: Any) -> Any:
    """A query-result value as JSON: Decimal -> float, dates and times -> ISO 8601, bytes -> base64."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [jsonable(v) for v in value]
    return str(value)


__all__ = [
    "DEFAULT_KEEP_TURNS",
    "PgConversations",
    "append_turn",
    "delete_conversation",
    "ensure_conversations_table",
    "jsonable",
    "load_conversation",
    "save_conversation",
    "turn_from_json",
    "turn_to_json",
]
