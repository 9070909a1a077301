"""Chainlit handlers only: thin, they run a turn (rag_bot.assistant.turn) and render its events.

Sign-in (password or proxy header), per-user history in PostgreSQL (Chainlit's SQLAlchemy data
layer), thumbs up/down, resuming a past thread, and the support widget (copilot) all hang off the
handlers registered here; what each setting does is in rag_bot/config.py.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AbstractContextManager
from functools import lru_cache
from typing import Any

import chainlit as cl
import psycopg
from chainlit.data.base import BaseDataLayer
from chainlit.types import ThreadDict

from rag_bot import prompts
from rag_bot.assistant.conversation import Conversation
from rag_bot.assistant.sessions import InvalidThreadId, PgConversations, chat_conversation_id
from rag_bot.assistant.turn import Done, Token, TurnResult, TurnRunner
from rag_bot.config import get_settings
from rag_bot.db import connect, store_url
from rag_bot.observability import new_request_id, request_id_var
from rag_bot.profiles import get_profiles, in_language
from rag_bot.prompts import detect_language
from rag_bot.ui.auth import (
    allowed_profiles,
    ensure_auth_secret,
    header_user,
    password_user,
    user_language,
)
from rag_bot.ui.chat_history import AnswerMeta, add_rated_example, conversation_from_steps, prompt_messages
from rag_bot.ui.render import render_chart, render_error, render_sources, render_sql, render_table
from rag_bot.wiring import Components, shared_components

logger = logging.getLogger(__name__)

def components() -> Components:
    """Built on first use (not at import), so a dead database gives a chat message, not a crash.

    Shared with the HTTP API when both run in one process (`rag-bot serve`): one embedder, one store.
    """
    return shared_components(get_settings())


@lru_cache(maxsize=1)
def chat_database_url() -> str:
    """The store's database, which also holds the chat history schema and the conversations."""
    return store_url(get_settings())


# -- sign-in ---------------------------------------------------------------------------------------
_settings = get_settings()
if _settings.ui_auth != "none":
    # Chainlit checks for its token secret right after importing this module.
    ensure_auth_secret(_settings)

if _settings.ui_auth == "password":

    @cl.password_auth_callback
    async def password_auth(username: str, password: str) -> cl.User | None:
        # PBKDF2 takes a few hundred milliseconds: keep it off the event loop.
        return await asyncio.to_thread(password_user, get_settings(), username, password)

elif _settings.ui_auth == "header":

    @cl.header_auth_callback
    async def header_auth(headers: Any) -> cl.User | None:
        return header_user(get_settings(), headers)


# -- history (Chainlit's data layer) ---------------------------------------------------------------
if _settings.chat_history:

    @cl.data_layer  # type: ignore[arg-type]  # annotated as never None, but Chainlit handles None (no history)
    def data_layer() -> BaseDataLayer | None:
        """Chat history on the project's PostgreSQL; None (no history, chat still works) if unreachable."""
        from rag_bot.ui.chat_history import migrate_chat_history
        from rag_bot.ui.data_layer import ChatDataLayer

        settings = get_settings()
        try:
            url = chat_database_url()
            with connect(url, autocommit=True) as conn:
                migrate_chat_history(conn, settings.chat_schema)
        except Exception:  # noqa: BLE001 - the chat must work without history
            logger.exception("chat history is off: its tables could not be prepared")
            return None
        return ChatDataLayer(url, schema=settings.chat_schema, on_thumbs_up=store_solved_example)

    @cl.on_app_startup
    async def prepare_history() -> None:
        """Create the history tables before the first visitor (off the event loop) when run standalone."""
        from chainlit.data import get_data_layer

        await asyncio.to_thread(get_data_layer)


async def store_solved_example(meta: AnswerMeta) -> None:
    """A thumbs-up on a data answer whose SQL ran: later similar questions see it as an example."""
    await asyncio.to_thread(_add_example, meta)


def _add_example(meta: AnswerMeta) -> None:
    from rag_bot.store import VectorStore

    parts = components()
    # Its own connection: the shared store's connection may be inside another thread's transaction.
    store = VectorStore(chat_database_url(), embedder_name=parts.embedder.name, dim=parts.embedder.dim)
    try:
        source = add_rated_example(meta, store, parts.embedder)
        logger.info("solved example stored from feedback: %s", source)
    finally:
        store.close()


if _settings.support_demo_page:
    from chainlit.server import app as _chainlit_server

    from rag_bot.ui.support_demo import add_demo_route

    add_demo_route(_chainlit_server, _settings.copilot_profile)


# -- profiles --------------------------------------------------------------------------------------
@cl.set_chat_profiles
async def chat_profiles(current_user: cl.User | None = None, language: str | None = None) -> list[cl.ChatProfile]:
    """The profiles this user may pick, with their description and starters from profiles.yaml, in the
    interface's language (the browser's, as Chainlit passes it), else the account's."""
    config = get_profiles(get_settings().profiles_file)
    if language:
        lang = "ru" if language.lower().startswith("ru") else "en"
    else:
        lang = user_language(current_user) or "en"
    profiles = []
    for name in allowed_profiles(current_user, config.profiles):
        profile = config.profiles[name]
        starters = [cl.Starter(label=s.label, message=s.message) for s in profile.starters_for(lang)]
        title = in_language(profile.name, lang) if profile.name else name
        description = in_language(profile.description, lang)
        profiles.append(cl.ChatProfile(name=name, markdown_description=f"**{title}.** {description}".strip(),
                                       starters=starters))
    return profiles


def session_profile() -> str | None:
    """The profile this session answers with: the widget's fixed one, else the user's choice if allowed."""
    settings = get_settings()
    config = get_profiles(settings.profiles_file)
    if cl.context.session.client_type == "copilot":
        return settings.copilot_profile if settings.copilot_profile in config.profiles else None
    allowed = allowed_profiles(cl.context.session.user, config.profiles)
    chosen = cl.user_session.get("chat_profile")
    for candidate in (chosen, settings.default_profile):
        if candidate in allowed:
            return str(candidate)
    return allowed[0] if allowed else None


# -- conversation ----------------------------------------------------------------------------------
def valid_thread_id(thread_id: str | None) -> bool:
    """Chainlit takes the browser's thread id as is: only its own UUIDs may reach a stored conversation."""
    try:
        chat_conversation_id(thread_id)
    except InvalidThreadId:
        return False
    return True


def _connect_chat_db() -> AbstractContextManager[psycopg.Connection]:
    return connect(chat_database_url(), autocommit=True)


@lru_cache(maxsize=1)
def turn_runner() -> TurnRunner:
    """The chat's turn runner: the same one the API uses, with conversations in the store's database."""
    parts = components()
    return TurnRunner(parts.profiles(), parts.services, conversations=PgConversations(_connect_chat_db))


@cl.on_chat_resume
async def resume(thread: ThreadDict) -> None:
    """A past thread reopened: make sure its turns are stored (older threads: rebuilt from the messages)."""
    profile = session_profile()
    if profile is None or not valid_thread_id(thread.get("id")):
        return
    try:
        await asyncio.to_thread(restore_conversation, thread, profile)
    except Exception:  # noqa: BLE001 - the thread is shown anyway; only follow-up context is lost
        logger.exception("could not restore the conversation of thread %s", thread.get("id"))


def restore_conversation(thread: ThreadDict, profile: str) -> Conversation:
    """The turns stored for this thread, else rebuilt from the thread's messages and stored."""
    from rag_bot.assistant.sessions import load_conversation, save_conversation

    conversation_id = chat_conversation_id(thread["id"])
    with _connect_chat_db() as conn:
        conversation = load_conversation(conn, conversation_id, profile)
        if not conversation.turns:
            conversation = conversation_from_steps(thread.get("steps") or [], profile=profile)
            if conversation.turns:
                save_conversation(conn, conversation_id, profile, conversation)
    return conversation


async def _render(result: TurnResult, message: cl.Message) -> None:
    """Fill `message` (its text already streamed) with sources, the SQL step, the table and the chart."""
    reply = result.reply
    elements: list[Any] = []
    if reply.prepared is not None:
        footer, source_elements = render_sources(reply.citations, reply.route.language, get_settings().documents_root)
        message.content += footer
        elements.extend(source_elements)
    if reply.sql:
        await render_sql(reply.sql, reply.route.language)
    if reply.columns and reply.rows:
        elements.append(render_table(reply.columns, reply.rows, language=reply.route.language))
    if reply.chart_png:
        # Sent with the message (shown live from the session's files); kept in history by the data layer.
        elements.append(render_chart(reply.chart_png))
    message.elements = elements
    message.actions = [cl.Action(name=FOLLOW_UP, payload={"question": q}, label=q[:80], tooltip=q)
                       for q in reply.suggestions]


FOLLOW_UP = "follow_up"


@cl.action_callback(FOLLOW_UP)
async def on_follow_up(action: cl.Action) -> None:
    """A suggested next question was clicked: ask it as if the user had typed it."""
    question = str(action.payload.get("question") or "").strip()
    if not question:
        return
    user = cl.context.session.user
    message = cl.Message(content=question, type="user_message", author=user.identifier if user else "User")
    await message.send()
    await on_message(message)


def answer_meta(question: str, profile: str, result: TurnResult) -> AnswerMeta:
    reply = result.reply
    prepared = reply.prepared
    prompt = prompt_messages(prepared.messages) if result.generated and prepared is not None else None
    return AnswerMeta(
        question=question, profile=profile, intent=reply.route.intent, domains=list(reply.route.domains),
        language=reply.route.language, answer=result.generated, prompt=prompt, sql=reply.sql,
        sql_ok=bool(reply.sql and reply.columns),
    )


@cl.on_message
async def on_message(message: cl.Message) -> None:
    language = detect_language(message.content)
    reply_message = cl.Message(content="")
    request_id_var.set(new_request_id())  # follows this question through every log line
    profile_name = session_profile()
    if not valid_thread_id(cl.context.session.thread_id):
        # A client-chosen id (e.g. an API conversation's): answer nothing, store nothing.
        logger.warning("refused a message on thread id %r", cl.context.session.thread_id)
        reply_message.content = prompts.text("bad_thread", user_language(cl.context.session.user) or language)
        await reply_message.send()
        return
    if profile_name is None:
        reply_message.content = prompts.text("no_profile", user_language(cl.context.session.user) or language)
        await reply_message.send()
        return
    try:
        runner = await asyncio.to_thread(turn_runner)
        result: TurnResult | None = None
        # The message's own language: a short Russian follow-up to an English question is answered in Russian.
        async for event in runner.run(message.content, profile=profile_name, channel="chat", language=language,
                                      conversation_id=chat_conversation_id(cl.context.session.thread_id)):
            if isinstance(event, Token):
                await reply_message.stream_token(event.text)
            elif isinstance(event, Done):
                result = event.result
        if result is None:  # run() ends with Done or raises
            raise RuntimeError("the turn ended without a result")
        await _render(result, reply_message)
        reply_message.metadata = answer_meta(message.content, profile_name, result).to_metadata()
    except Exception as exc:  # noqa: BLE001 - never a traceback or driver text in the chat (counted by the runner)
        reply_message.content = render_error(exc, language)
        reply_message.elements = []
    await reply_message.send()
