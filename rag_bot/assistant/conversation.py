"""What a conversation is made of: the route of a message, its turns, the conversation itself.

Plain data with no model behind it, so sessions, chat history, the API and the UI can hold a
conversation without importing the router (and numpy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from rag_bot.profiles import DOMAIN_INTENTS, Intent

if TYPE_CHECKING:
    import numpy as np

Sentiment = Literal["neutral", "negative", "angry"]
RoutePath = Literal["fast", "slow", "followup"]


@dataclass(frozen=True)
class Route:
    """Where a message goes. `domains` is empty for smalltalk/out_of_scope; two when ambiguous."""

    intent: Intent
    domains: tuple[str, ...]
    intent_confidence: float
    domain_confidence: float
    path: RoutePath
    language: str
    sentiment: Sentiment | None = None
    # Set when the router would rather ask than guess (on_ambiguous_domain: clarify).
    clarifying_question: str | None = None
    # The intent is one the profile does not offer (e.g. sql on the public support bot).
    permitted: bool = True
    latency_s: float = 0.0
    # The message's query embedding, reused by the retriever so a turn is embedded once.
    embedding: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass
class Turn:
    message: str
    route: Route | None = None
    answer: str = ""
    # (sql, columns, rows) of a data answer, so "plot that" can reuse it without querying again.
    data: tuple[str, list[str], list[tuple[Any, ...]]] | None = None


@dataclass
class Conversation:
    """The turns so far; the router reads the last route, the retriever condenses the last turns."""

    turns: list[Turn] = field(default_factory=list)

    def add(self, message: str, route: Route | None = None, answer: str = "") -> None:
        self.turns.append(Turn(message, route, answer))

    @property
    def last_route(self) -> Route | None:
        for turn in reversed(self.turns):
            if turn.route is not None and turn.route.intent in DOMAIN_INTENTS:
                return turn.route
        return None
