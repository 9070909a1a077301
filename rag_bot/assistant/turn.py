"""The one turn runner: load the conversation, respond, stream, remember, save, observe.

Every channel runs a turn here and only renders what it yields: the Chainlit chat, the HTTP API
(JSON and SSE), the MCP server and `rag-bot ask`. So language, metering, timings, stored
conversations and metrics are decided once, in one place, whatever the channel:

    runner = TurnRunner(profiles, components.services, conversations=PgConversations(pool.connection))
    async for event in runner.run("а для ноутбуков?", profile="analyst", conversation_id="chat:<thread>",
                                  channel="chat"):
        if isinstance(event, Token):
            show(event.text)
        elif isinstance(event, Done):
            render(event.result)

A turn's language is the message's own (or the caller's explicit choice), decided here: an English
question followed by "а для ноутбуков?" is routed, searched and answered in Russian.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Protocol

from rag_bot.assistant.conversation import Conversation, Turn
from rag_bot.assistant.respond import Reply, Services, remember, respond
from rag_bot.llm.base import LLMClient
from rag_bot.observability import MeteredLLM, error_kind, observe_error, observe_question
from rag_bot.profiles import ProfilesConfig
from rag_bot.prompts import detect_language

logger = logging.getLogger(__name__)


class ConversationStore(Protocol):
    """Where turns are kept between messages (rag_bot.assistant.sessions.PgConversations)."""

    def load(self, conversation_id: str, profile: str) -> Conversation: ...

    def append(self, conversation_id: str, profile: str, turn: Turn) -> None: ...


@dataclass(frozen=True)
class TurnResult:
    """A finished turn. `text` is what the user was shown; `generated` the part the LLM wrote for a
    docs answer ('' otherwise), which feedback and the fine-tuning export keep with its prompt."""

    reply: Reply
    text: str
    generated: str
    conversation_id: str | None
    total_s: float
    saved: bool


@dataclass(frozen=True)
class Routed:
    """The message is routed and retrieved (or queried); the text follows as Token events."""

    reply: Reply


@dataclass(frozen=True)
class Token:
    text: str


@dataclass(frozen=True)
class Done:
    result: TurnResult


TurnEvent = Routed | Token | Done


class TurnRunner:
    """Runs turns for any profile of one profiles file; thread-safe, holds no conversation state."""

    def __init__(
        self, profiles: ProfilesConfig, services: Callable[[str], Services], *,
        conversations: ConversationStore | None = None,
    ) -> None:
        self.profiles = profiles
        self._services = services
        self.conversations = conversations

    async def run(
        self, message: str, *, profile: str, channel: str, conversation_id: str | None = None,
        language: str | None = None,
    ) -> AsyncIterator[TurnEvent]:
        """One turn as events: Routed, Token..., Done. Failures are counted, then raised to the
        channel, which words them for its user (nothing has been stored for a failed turn)."""
        started = time.perf_counter()
        language = language or detect_language(message)
        try:
            chosen = self.profiles.profile(profile)
            services = _metered(await asyncio.to_thread(self._services, profile))
            conversation = Conversation()
            if self.conversations is not None and conversation_id is not None:
                conversation = await asyncio.to_thread(self.conversations.load, conversation_id, profile)
            reply = await asyncio.to_thread(
                respond, message, conversation=conversation, profile=chosen, services=services, language=language
            )
            yield Routed(reply)
            pieces: list[str] = []
            async for piece in _stream_text(reply, services.llm):
                pieces.append(piece)
                yield Token(piece)
        except Exception as exc:
            observe_error(error_kind(exc))
            raise
        text = "".join(pieces)
        generated = _generated_part(reply, text)
        remember(conversation, message, reply, text)
        saved = await self._save(conversation_id, profile, conversation.turns[-1])
        total = time.perf_counter() - started
        route = reply.route
        observe_question(channel=channel, profile=profile, intent=route.intent, domains=route.domains,
                         escalate=reply.escalate, timings=reply.timings, total_s=total)
        logger.info("%s answer profile=%s intent=%s domains=%s lang=%s escalate=%s %.0f ms", channel, profile,
                    route.intent, ",".join(route.domains) or "-", route.language, reply.escalate, total * 1000)
        yield Done(TurnResult(reply, text, generated, conversation_id, total, saved))

    async def answer(
        self, message: str, *, profile: str, channel: str, conversation_id: str | None = None,
        language: str | None = None,
    ) -> TurnResult:
        """The whole turn at once (the MCP server, tests)."""
        async for event in self.run(message, profile=profile, channel=channel, conversation_id=conversation_id,
                                    language=language):
            if isinstance(event, Done):
                return event.result
        raise RuntimeError("a turn ended without a result")  # run() always ends with Done or raises

    async def _save(self, conversation_id: str | None, profile: str, turn: Turn) -> bool:
        """Store the turn; a failure loses only the stored copy (the answer is already given)."""
        if self.conversations is None or conversation_id is None:
            return False
        try:
            await asyncio.to_thread(self.conversations.append, conversation_id, profile, turn)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            observe_error(error_kind(exc))
            logger.exception("could not store the turn of conversation %s", conversation_id)
            return False
        return True


def _metered(services: Services) -> Services:
    """Services whose LLM calls count in /metrics (rag_bot.wiring meters the router's calls too)."""
    if isinstance(services.llm, MeteredLLM):
        return services
    return replace(services, llm=MeteredLLM(services.llm))


async def _stream_text(reply: Reply, llm: LLMClient) -> AsyncIterator[str]:
    """The reply's text: a docs answer streamed from the LLM (the only place an answer is generated),
    then the reply's own text; adds `llm_first_token_s` and `llm_s` to the reply's timings."""
    prepared = reply.prepared
    if prepared is not None:
        if prepared.canned_reply is not None:
            yield prepared.canned_reply
        else:
            started = time.perf_counter()
            first = True
            async for piece in llm.astream(prepared.messages):
                if first:
                    reply.timings["llm_first_token_s"] = time.perf_counter() - started
                    first = False
                yield piece
            reply.timings["llm_s"] = time.perf_counter() - started
    if reply.text:
        yield ("\n\n" if prepared is not None else "") + reply.text


def _generated_part(reply: Reply, text: str) -> str:
    """The LLM-written part of a docs answer (the canned "nothing found" reply is not generated)."""
    prepared = reply.prepared
    if prepared is None or prepared.canned_reply is not None:
        return ""
    if reply.text and text.endswith("\n\n" + reply.text):
        return text[: -len(reply.text) - 2]
    return text
