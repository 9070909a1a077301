"""Chainlit handlers only: thin, they call answer.py and render the result."""

from __future__ import annotations

import logging

import chainlit as cl

from rag_bot import prompts
from rag_bot.answer import prepare_answer
from rag_bot.config import get_settings
from rag_bot.errors import LLMUnavailable, RagBotError
from rag_bot.language import detect_language
from rag_bot.ui.render import render_sources
from rag_bot.wiring import Components, build_components

logger = logging.getLogger(__name__)
_components: Components | None = None


def components() -> Components:
    """Built on first use (not at import), so a dead database gives a chat message, not a crash."""
    global _components
    if _components is None:
        _components = build_components(get_settings())
    return _components


@cl.set_starters
async def starters() -> list[cl.Starter]:
    return [
        cl.Starter(label="Сколько дней отпуска?", message="Сколько дней отпуска положено сотруднику?"),
        cl.Starter(label="Laptop returns", message="What is the return period for a laptop?"),
        cl.Starter(label="Гарантия на сервер", message="Какой гарантийный срок на серверы?"),
        cl.Starter(label="Support hours", message="When is customer support available?"),
    ]


@cl.on_message
async def on_message(message: cl.Message) -> None:
    language = detect_language(message.content)
    reply = cl.Message(content="")
    try:
        parts = await cl.make_async(components)()
        settings = parts.settings
        prepared = await cl.make_async(prepare_answer)(
            message.content, store=parts.store, embedder=parts.embedder, audience="internal",
            top_k=settings.top_k, budget_tokens=settings.context_budget_tokens,
        )
        if prepared.canned_reply is not None:
            await reply.stream_token(prepared.canned_reply)
        else:
            async for token in parts.llm.astream(prepared.messages):
                await reply.stream_token(token)
        footer, elements = render_sources(prepared.citations, prepared.language)
        reply.content += footer
        reply.elements = elements  # type: ignore[assignment]
    except LLMUnavailable:
        logger.exception("LLM unavailable")
        reply.content = prompts.text("llm_down", language)
    except RagBotError as exc:
        logger.warning("user-facing error: %s", exc)
        reply.content = str(exc)
    except Exception:  # noqa: BLE001 - never show a traceback or driver text in the chat
        logger.exception("unexpected error while answering")
        reply.content = prompts.text("internal_error", language)
    await reply.send()
