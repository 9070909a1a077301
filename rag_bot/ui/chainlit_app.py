"""Chainlit handlers only: thin, they call assistant.respond and render the Reply."""

from __future__ import annotations

import logging

import chainlit as cl

from rag_bot import prompts
from rag_bot.assistant import Reply, remember, respond
from rag_bot.config import get_settings
from rag_bot.errors import LLMUnavailable, RagBotError
from rag_bot.language import detect_language
from rag_bot.profiles import get_profiles
from rag_bot.routing import Conversation
from rag_bot.ui.render import render_chart, render_sources, render_sql, render_table
from rag_bot.wiring import Components, build_components

logger = logging.getLogger(__name__)
_components: Components | None = None

STARTERS = {
    "analyst": [
        ("Сколько дней отпуска?", "Сколько дней отпуска положено сотруднику?"),
        ("Выручка по регионам", "Выручка по регионам за прошлый квартал"),
        ("Top customers 2024", "top 5 customers by revenue in 2024"),
        ("График выручки", "Построй график выручки по месяцам за 2024 год"),
    ],
    "support": [
        ("Laptop returns", "What is the return period for a laptop?"),
        ("Гарантия", "Какой гарантийный срок на ноутбуки?"),
        ("Support hours", "When is customer support available?"),
        ("Доставка", "Сколько стоит доставка по Москве?"),
    ],
}


def components() -> Components:
    """Built on first use (not at import), so a dead database gives a chat message, not a crash."""
    global _components
    if _components is None:
        _components = build_components(get_settings())
    return _components


@cl.set_chat_profiles
async def chat_profiles() -> list[cl.ChatProfile]:
    config = get_profiles(get_settings().profiles_file)
    return [
        cl.ChatProfile(name=name, markdown_description=profile.description,
                       starters=[cl.Starter(label=label, message=text) for label, text in STARTERS.get(name, [])])
        for name, profile in config.profiles.items()
    ]


@cl.on_chat_start
async def start() -> None:
    cl.user_session.set("conversation", Conversation())


async def _render(reply: Reply, message: cl.Message) -> str:
    """Stream or fill `message` from the reply; returns the text shown."""
    parts = components()
    if reply.prepared is not None:
        if reply.prepared.canned_reply is not None:
            await message.stream_token(reply.prepared.canned_reply)
        else:
            async for token in parts.llm.astream(reply.prepared.messages):
                await message.stream_token(token)
        footer, elements = render_sources(reply.citations, reply.route.language)
        message.content += footer
        message.elements = elements  # type: ignore[assignment]
    if reply.text:
        message.content += ("\n\n" if message.content else "") + reply.text
    if reply.sql:
        await render_sql(reply.sql, reply.route.language)
    elements = list(message.elements or [])
    if reply.columns and reply.rows:
        elements.append(render_table(reply.columns, reply.rows))
    if reply.chart_png:
        elements.append(render_chart(reply.chart_png))
    message.elements = elements  # type: ignore[assignment]
    return message.content


@cl.on_message
async def on_message(message: cl.Message) -> None:
    language = detect_language(message.content)
    conversation: Conversation = cl.user_session.get("conversation") or Conversation()
    profile_name = cl.user_session.get("chat_profile") or get_settings().default_profile
    reply_message = cl.Message(content="")
    try:
        parts = await cl.make_async(components)()
        services = await cl.make_async(parts.services)(profile_name)
        profile = get_profiles(get_settings().profiles_file).profile(profile_name)
        reply = await cl.make_async(respond)(
            message.content, conversation=conversation, profile=profile, services=services
        )
        text = await _render(reply, reply_message)
        remember(conversation, message.content, reply, text)
        cl.user_session.set("conversation", conversation)
    except LLMUnavailable:
        logger.exception("LLM unavailable")
        reply_message.content = prompts.text("llm_down", language)
    except RagBotError as exc:
        logger.warning("user-facing error: %s", exc)
        reply_message.content = str(exc)
    except Exception:  # noqa: BLE001 - never show a traceback or driver text in the chat
        logger.exception("unexpected error while answering")
        reply_message.content = prompts.text("internal_error", language)
    await reply_message.send()
