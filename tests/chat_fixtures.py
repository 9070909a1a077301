"""Helpers for the chat history tests: a migrated chat schema and rated threads stored through the data layer.

Import the fixture by name in a test module (`from chat_fixtures import chat_db`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
import pytest
from chainlit.context import init_http_context
from chainlit.types import Feedback
from chainlit.user import User

from rag_bot.ui.chat_history import AnswerMeta, migrate_chat_history
from rag_bot.ui.data_layer import ChatDataLayer

T = TypeVar("T")
SCHEMA = "chainlit"


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(scenario())


@pytest.fixture
def chat_db(fresh_db_url: str) -> str:
    """A fresh database with the chat history schema."""
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        migrate_chat_history(conn, SCHEMA)
    return fresh_db_url


def step(thread_id: str, kind: str, output: str, created: str, metadata: dict[str, Any] | None = None,
         name: str = "step") -> dict[str, Any]:
    """A step dict as Chainlit's Message.to_dict() makes it."""
    return {"id": str(uuid.uuid4()), "threadId": thread_id, "type": kind, "name": name, "output": output,
            "input": "", "streaming": False, "createdAt": created, "start": created, "end": created,
            "metadata": metadata or {}, "isError": False, "autoCollapse": False, "defaultOpen": False}


async def store_rated_thread(
    layer: ChatDataLayer, identifier: str, turns: list[tuple[str, AnswerMeta, int | None]]
) -> tuple[str, list[str]]:
    """A user's thread with a user message and an answer per turn, each answer rated as given (None: unrated)."""
    user = await layer.create_user(User(identifier=identifier, metadata={"profiles": ["analyst"]}))
    assert user is not None
    init_http_context(user=user)
    thread_id = str(uuid.uuid4())
    await layer.update_thread(thread_id, name=turns[0][0], user_id=user.id, metadata={"chat_profile": "analyst"})
    answer_ids = []
    for index, (question, meta, rating) in enumerate(turns):
        await layer.create_step(step(thread_id, "user_message", question, f"2025-01-01T10:0{index}:00Z",
                                     name=identifier))
        # As Chainlit 2.12 records a turn: the `on_message` run step with the answer under it.
        turn = step(thread_id, "run", "", f"2025-01-01T10:0{index}:10Z", name="on_message")
        await layer.create_step(turn)
        answer = step(thread_id, "assistant_message", meta.answer or "…", f"2025-01-01T10:0{index}:30Z",
                      meta.to_metadata(), name="Assistant")
        answer["parentId"] = turn["id"]
        await layer.create_step(answer)
        answer_ids.append(answer["id"])
        if rating is not None:
            # The UI rates the turn (the run step), with no threadId: the layer resolves both.
            await layer.upsert_feedback(Feedback(forId=turn["id"], value=rating, comment="ok"))  # type: ignore[arg-type]
    return thread_id, answer_ids
