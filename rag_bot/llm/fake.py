"""FakeLLM: a real LLMClient with scripted replies, for unit tests and offline demos."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from rag_bot.llm.base import ChatMessage, Completion


class FakeLLM:
    """Replies from a queue (or echoes a default); records every conversation it received."""

    model = "fake"

    def __init__(self, replies: Sequence[str] = (), default: str = "OK") -> None:
        self._replies: deque[str] = deque(replies)
        self._default = default
        self.received: list[list[ChatMessage]] = []

    def _next(self, messages: Sequence[ChatMessage]) -> str:
        self.received.append(list(messages))
        return self._replies.popleft() if self._replies else self._default

    def complete(self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None) -> Completion:
        return Completion(text=self._next(messages))

    def stream(self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None) -> Iterator[str]:
        text = self._next(messages)
        for index in range(0, len(text), 8):
            yield text[index : index + 8]

    async def astream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None
    ) -> AsyncIterator[str]:
        for piece in self.stream(messages, max_tokens=max_tokens):
            yield piece

    def choose(self, messages: Sequence[ChatMessage], choices: Sequence[str]) -> str:
        reply = self._next(messages)
        if reply not in choices:
            raise ValueError(f"FakeLLM reply {reply!r} is not one of {list(choices)}")
        return reply

    def complete_json(
        self,
        messages: Sequence[ChatMessage],
        schema: dict[str, Any],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> dict[str, Any]:
        """The next reply parsed as JSON; a reply that is not a JSON object fails like a broken server."""
        reply = self._next(messages)
        value = json.loads(reply)
        if not isinstance(value, dict):
            raise ValueError(f"FakeLLM reply {reply!r} is not a JSON object")
        return value
