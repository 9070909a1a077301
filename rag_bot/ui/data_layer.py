"""Chainlit's SQLAlchemy data layer on the project's PostgreSQL (psycopg 3, async), in its own schema.

Two additions to the stock layer:
- `PostgresFileStorage`: without a storage provider the layer drops every element (charts, tables,
  source passages) from history. This one keeps their bytes in `element_files` and hands them back
  as `data:` URLs, so a resumed thread shows its charts without an object store or a file route.
- `ChatDataLayer.upsert_feedback`: a thumbs-up on a data answer whose SQL ran calls `on_thumbs_up`
  (the app stores the question and SQL as a solved example for later questions).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from chainlit.data.sql_alchemy import SQLAlchemyDataLayer
from chainlit.data.storage_clients.base import BaseStorageClient
from chainlit.types import Feedback, PaginatedResponse, Pagination, ThreadDict, ThreadFilter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from rag_bot.ui.chat_history import AnswerMeta, schema_name

logger = logging.getLogger(__name__)

ThumbsUpHook = Callable[[AnswerMeta], Awaitable[None]]
# Set while listing threads for the sidebar: element files are not read (the list shows names only).
_LISTING: ContextVar[bool] = ContextVar("rag_bot_listing_threads", default=False)


def async_url(url: str) -> str:
    """A libpq URL (postgresql://...) as SQLAlchemy's async psycopg 3 URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgres", "postgresql", "postgresql+psycopg"):
        raise ValueError("expected a postgresql:// URL")
    return "postgresql+psycopg://" + rest


class PostgresFileStorage(BaseStorageClient):
    """Element files as rows of `element_files`; read back as `data:` URLs (so kept small)."""

    def __init__(self, max_bytes: int = 5 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._engine: AsyncEngine | None = None

    def bind(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("PostgresFileStorage is not bound to an engine")
        return self._engine

    async def upload_file(
        self,
        object_key: str,
        data: bytes | str,
        mime: str = "application/octet-stream",
        overwrite: bool = True,
        content_disposition: str | None = None,
    ) -> dict[str, Any]:
        raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        if len(raw) > self.max_bytes:
            logger.warning("element %s (%d bytes) is too large to keep in history", object_key, len(raw))
            return {"object_key": None, "url": None}
        conflict = "DO UPDATE SET mime = EXCLUDED.mime, data = EXCLUDED.data" if overwrite else "DO NOTHING"
        async with self.engine.begin() as conn:
            await conn.execute(
                text(f"INSERT INTO element_files (object_key, mime, data) VALUES (:key, :mime, :data) "
                     f"ON CONFLICT (object_key) {conflict}"),
                {"key": object_key, "mime": mime or "application/octet-stream", "data": raw},
            )
        return {"object_key": object_key, "url": None}

    async def get_read_url(self, object_key: str) -> str:
        if _LISTING.get():
            return ""
        async with self.engine.connect() as conn:
            row = (await conn.execute(text("SELECT mime, data FROM element_files WHERE object_key = :key"),
                                      {"key": object_key})).first()
        if row is None:
            return ""
        mime, data = str(row[0]), bytes(row[1])
        charset = ";charset=utf-8" if mime.startswith("text/") or mime == "application/json" else ""
        return f"data:{mime}{charset};base64,{base64.b64encode(data).decode()}"

    async def delete_file(self, object_key: str) -> bool:
        async with self.engine.begin() as conn:
            await conn.execute(text("DELETE FROM element_files WHERE object_key = :key"), {"key": object_key})
        return True

    async def close(self) -> None:
        """The engine belongs to the data layer, which disposes of it."""


class ChatDataLayer(SQLAlchemyDataLayer):
    """SQLAlchemyDataLayer in `schema`, with element files in Postgres and a thumbs-up hook."""

    def __init__(self, url: str, *, schema: str, on_thumbs_up: ThumbsUpHook | None = None) -> None:
        storage = PostgresFileStorage()
        # Chainlit's SQL names its tables without a schema: point the search path at ours.
        super().__init__(
            async_url(url),
            connect_args={"options": f"-c search_path={schema_name(schema)}"},
            storage_provider=storage,
        )
        storage.bind(self.engine)
        self.on_thumbs_up = on_thumbs_up

    async def upsert_feedback(self, feedback: Feedback) -> str:
        if not feedback.threadId:
            # feedbacks.threadId is NOT NULL; a client that omits it would lose the feedback silently.
            rows = await self.execute_sql('SELECT "threadId" FROM steps WHERE "id" = :id', {"id": feedback.forId})
            if isinstance(rows, list) and rows:
                feedback.threadId = str(rows[0]["threadId"])
        feedback_id = await super().upsert_feedback(feedback)
        if feedback.value == 1 and self.on_thumbs_up is not None:
            # Chainlit's UI rates the turn (the `on_message` run step): its answer is the last
            # assistant message under it.
            rows = await self.execute_sql(
                "SELECT id FROM steps WHERE type = 'assistant_message' AND (id = :id OR \"parentId\" = :id) "
                'ORDER BY "createdAt" DESC LIMIT 1', {"id": feedback.forId})
            answer_id = str(rows[0]["id"]) if isinstance(rows, list) and rows else feedback.forId
            step = await self.get_step(answer_id)
            meta = AnswerMeta.from_metadata(step.get("metadata") if step else None)
            if meta is not None and meta.sql and meta.sql_ok:
                try:
                    await self.on_thumbs_up(meta)
                except Exception:  # noqa: BLE001 - the rating is stored; the example is a bonus
                    logger.exception("could not store the solved example for step %s", feedback.forId)
        return feedback_id

    async def list_threads(self, pagination: Pagination, filters: ThreadFilter) -> PaginatedResponse[ThreadDict]:
        """The stock layer loads every thread with its elements for the sidebar; skip the files there."""
        token = _LISTING.set(True)
        try:
            response = await super().list_threads(pagination, filters)
        finally:
            _LISTING.reset(token)
        for thread in response.data:
            thread["elements"] = []
        return response

    async def get_element(self, thread_id: str, element_id: str) -> Any:
        element = await super().get_element(thread_id, element_id)
        key = element.get("objectKey") if element is not None else None
        if element is not None and key and self.storage_provider is not None:
            element["url"] = await self.storage_provider.get_read_url(key) or element.get("url")
        return element
