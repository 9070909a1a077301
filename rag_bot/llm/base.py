"""The LLM seam: chat messages in, text (whole or streamed) out, or one choice from a fixed list."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


class LLMClient(Protocol):
    """What the bot needs from a language model; implementations: OpenAICompatClient, FakeLLM."""

    model: str

    def complete(self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None) -> Completion:
        """The whole reply at once."""
        ...

    def stream(self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None) -> Iterator[str]:
        """The reply as text deltas, for showing it while it is written."""
        ...

    def astream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None
    ) -> AsyncIterator[str]:
        """Async variant of `stream`, for the chat UI's event loop."""
        ...

    def choose(self, messages: Sequence[ChatMessage], choices: Sequence[str]) -> str:
        """Exactly one of `choices`, enforced by the server's structured output (never parsed free text)."""
        ...

    def complete_json(
        self,
        messages: Sequence[ChatMessage],
        schema: dict[str, Any],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> dict[str, Any]:
        """A JSON object matching `schema`, enforced by the server's structured output.

        `temperature` overrides the client's default for this call (sampling several candidates).
        """
        ...
