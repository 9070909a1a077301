"""The answer to one message: route it, then answer from documents, SQL or a chart.

`respond` is the blocking middle of a turn; rag_bot.assistant.turn runs the whole turn around it
(conversation, streaming, storing, metrics) for every channel. Docs answers are left to stream
(`Reply.prepared`), SQL and chart answers arrive whole (their numbers are checked against the query
result before anyone sees them).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field, replace
from datetime import date
from typing import TYPE_CHECKING, Any

from rag_bot import prompts
from rag_bot.assistant.conversation import Conversation, Route
from rag_bot.assistant.routing import Router
from rag_bot.assistant.suggestions import suggest
from rag_bot.documents.answer import PreparedAnswer, prepare_answer
from rag_bot.documents.retrieval import Citation
from rag_bot.embeddings import Embedder
from rag_bot.llm.base import ChatMessage, LLMClient
from rag_bot.profiles import Profile, in_language
from rag_bot.store import VectorStore

if TYPE_CHECKING:
    from rag_bot.analytics.sql_runner import SqlRunner
    from sandbox import SandboxRunner

logger = logging.getLogger(__name__)


@dataclass
class Reply:
    """What one turn produced; renderers show whichever parts are set."""

    route: Route
    text: str = ""
    prepared: PreparedAnswer | None = None  # a docs answer still to be streamed
    citations: list[Citation] = field(default_factory=list)
    sql: str | None = None
    columns: list[str] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    chart_png: bytes | None = None
    chart_code: str | None = None
    escalate: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    suggestions: list[str] = field(default_factory=list)  # next questions to offer (assistant.suggestions)


@dataclass
class Services:
    """The seams a turn may need; `runner` and `sandbox` are None where analytics/charts are off."""

    llm: LLMClient
    store: VectorStore
    embedder: Embedder
    router: Router
    runner: SqlRunner | None = None
    sandbox: SandboxRunner | None = None
    top_k: int = 5
    budget_tokens: int = 1800
    today: date | None = None  # reference date for "last quarter"; None = the real date
    reranker: Any = None  # rag_bot.documents.retrieval.Reranker, when RAG_BOT_RERANKER_BASE_URL is set


_HANDOVER_WORDS = ("оператор", "человек", "живой", "human", "operator", "agent", "manager", "менеджер")


def wants_human(message: str) -> bool:
    lowered = message.lower()
    return any(word in lowered for word in _HANDOVER_WORDS) and any(
        verb in lowered for verb in ("позов", "соедин", "переключ", "talk", "speak", "connect", "хочу", "want")
    )


def respond(
    message: str, *, conversation: Conversation, profile: Profile, services: Services, language: str | None = None
) -> Reply:
    """Route the message and answer it within what the profile allows.

    `language` ("ru"/"en"), decided by the turn runner, is the language of everything the turn does;
    None: the router detects it from the message.
    """
    started = time.perf_counter()
    route = services.router.classify(message, conversation)
    if language is not None and route.language != language:
        route = replace(route, language=language)
    reply = Reply(route=route, timings={"route_s": route.latency_s})
    reply.escalate = route.sentiment == "angry" or wants_human(message)
    language = route.language
    if route.intent == "smalltalk":
        greeting = profile.greeting
        reply.text = in_language(greeting, language) if greeting else prompts.text("smalltalk", language)
    elif route.intent == "out_of_scope":
        refuse = profile.instructions.refuse
        reply.text = (in_language(refuse, language) if refuse
                      else prompts.text("out_of_scope", language).format(topics=services.router.topics(language)))
    elif not route.permitted:
        reply.text = prompts.text("not_permitted", language)
    elif route.clarifying_question:
        reply.text = route.clarifying_question
    elif route.intent == "docs":
        query = _standalone(message, conversation)
        # The router embedded the message; a follow-up is searched with the previous question too.
        embedding = route.embedding if query == message else None

        def search(domains: list[str] | None) -> PreparedAnswer:
            return prepare_answer(
                query, store=services.store, embedder=services.embedder, audience=profile.audience,
                domains=domains, top_k=services.top_k, budget_tokens=services.budget_tokens,
                language=route.language, reranker=services.reranker, embedding=embedding,
                system=profile.docs_system(prompts.DOCS_SYSTEM),
            )

        reply.prepared = search(list(route.domains) or None)
        wider = [d for d in profile.domains if d not in route.domains]
        if not reply.prepared.citations and route.domains and wider:
            # A misrouted question would otherwise get "nothing found" while the answer sits in the
            # next domain: search every domain the profile allows before saying so.
            logger.info("nothing in %s; searching all of the profile's domains", ",".join(route.domains))
            reply.prepared = search(list(profile.domains))
        reply.citations = reply.prepared.citations
        reply.timings.update(reply.prepared.timings)
    elif route.intent in ("sql", "chart"):
        if route.intent == "sql" and _CHART_WORDS.search(message) and "chart" in profile.intents:
            # "а теперь графиком" after a data answer: explicit chart words outrank an inherited intent.
            route = replace(route, intent="chart")
            reply.route = route
        _answer_data(message, route, conversation, profile, services, reply)
    if reply.escalate and profile.audience == "public":
        reply.text = (reply.text + "\n\n" if reply.text else "") + prompts.text("handover", language)
    if not reply.escalate:
        reply.suggestions = suggest(message, reply, profile, services)
    reply.timings["total_s"] = time.perf_counter() - started
    return reply


def _standalone(message: str, conversation: Conversation) -> str:
    """A follow-up ('and for laptops?') is searched together with the previous question."""
    if conversation.turns and conversation.last_route is not None and len(message.split()) <= 6:
        return f"{conversation.turns[-1].message} {message}"
    return message


def _answer_data(
    message: str, route: Route, conversation: Conversation, profile: Profile, services: Services, reply: Reply
) -> None:
    language = route.language
    if services.runner is None:
        reply.text = prompts.text("analytics_off", language)
        return
    from rag_bot.analytics.pipeline import answer_analytics

    previous = _last_data(conversation)
    sql: str | None  # as Reply.sql: a stored turn's query, or the analytics answer's (Optional there)
    if route.intent == "chart" and previous is not None and (route.path == "followup" or _points_back(message)):
        sql, columns, rows = previous  # "plot that": reuse the last result instead of querying again
        reply.text = ""
    else:
        history = [ChatMessage("user", t.message) for t in conversation.turns[-3:]]
        data = answer_analytics(
            message, llm=services.llm, store=services.store, embedder=services.embedder,
            runner=services.runner, language=language, history=history, today=services.today,
        )
        reply.timings.update({f"sql_{k}": v for k, v in data.timings.items()})
        reply.sql, reply.columns, reply.rows = data.sql, list(data.columns), list(data.rows)
        reply.text = data.text
        if data.status != "ok":
            return
        sql, columns, rows = data.sql, list(data.columns), list(data.rows)
    reply.sql, reply.columns, reply.rows = sql, columns, rows
    if route.intent == "chart":
        if services.sandbox is None:
            reply.text += "\n\n" + prompts.text("charts_off", language)
            return
        from rag_bot.analytics.charts import answer_chart

        chart = answer_chart(message, columns, rows, llm=services.llm, sandbox=services.sandbox, language=language)
        reply.chart_png, reply.chart_code = chart.png, chart.code
        reply.timings.update(chart.timings)
        if chart.status != "ok":
            reply.text = (reply.text + "\n\n" if reply.text else "") + chart.message


_CHART_WORDS = re.compile(r"(график|диаграмм|гистограмм|визуализ|chart|plot|graph|visuali[sz]e)", re.I)
_BACK_REFERENCE = re.compile(r"\b(это|этого|эти|их|его|that|this|it|them|these)\b", re.I)


def _points_back(message: str) -> bool:
    """'plot that', 'покажи это графиком': the message refers to the previous result."""
    return bool(_BACK_REFERENCE.search(message)) and len(message.split()) <= 8


def _last_data(conversation: Conversation) -> tuple[str, list[str], list[tuple[Any, ...]]] | None:
    for turn in reversed(conversation.turns):
        if turn.data is not None:
            return turn.data
    return None


def remember(conversation: Conversation, message: str, reply: Reply, answer_text: str) -> None:
    """Add the turn to the conversation, with its query result for 'plot that' follow-ups."""
    conversation.add(message, reply.route, answer_text)
    if reply.sql and reply.columns:
        conversation.turns[-1].data = (reply.sql, reply.columns, reply.rows)
