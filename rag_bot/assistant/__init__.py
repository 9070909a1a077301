"""The path of one message: route it, answer it from documents, data or a chart, keep the conversation.

    conversation.py  Turn, Conversation, Route, Sentiment: plain data, no model behind them
    routing.py       Router: intent (docs/sql/chart/smalltalk/out_of_scope) and domain of a message
    respond.py       respond(): route, then the docs path (rag_bot.documents) or the data path
                     (rag_bot.analytics) within what the profile allows -> Reply
    turn.py          TurnRunner: the one turn runner every channel (chat, API, MCP, CLI) calls
    sessions.py      conversations in PostgreSQL, so any replica continues any conversation

Typical use::

    from rag_bot.assistant import TurnRunner, Token, Done
    runner = TurnRunner(profiles, components.services, conversations=PgConversations(pool.connection))
    async for event in runner.run(question, profile="support", channel="api", conversation_id=cid): ...

The names load lazily, so `from rag_bot.assistant.conversation import Conversation` costs no router.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Conversation": "conversation", "Route": "conversation", "Turn": "conversation", "Sentiment": "conversation",
    "Router": "routing",
    "Reply": "respond", "Services": "respond", "respond": "respond", "remember": "respond",
    "TurnRunner": "turn", "TurnResult": "turn", "TurnEvent": "turn", "Routed": "turn", "Token": "turn", "Done": "turn",
    "ConversationStore": "turn",
    "PgConversations": "sessions",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'rag_bot.assistant' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rag_bot.assistant.{_WHERE[name]}"), name)
