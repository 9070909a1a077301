"""Follow-up suggestions: two or three next questions after an answer, each one the bot can answer.

No LLM writes them (a 1.5B model invents questions about data that is not there, and it would cost a
call per turn). They are drawn from what the deployment already holds:
- after a data answer: "show this as a chart" (when the result has a label and a number and the
  profile draws charts), then the saved solved questions nearest to this one (each has a checked
  query, so it is answered from it, `analytics.pipeline.saved_query`);
- after a docs answer: the other sections the answer drew on ("Tell me more: «Returns»");
- after small talk or a refusal: the profile's starters.
A profile turns them off with `follow_ups: false`.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from rag_bot.analytics.schema_context import EXAMPLE_KIND, parse_example, question_key
from rag_bot.profiles import Profile
from rag_bot.prompts import detect_language
from rag_bot.store import SearchQuery

if TYPE_CHECKING:  # respond() calls suggest(): the types only, not a cycle
    from rag_bot.assistant.respond import Reply, Services

LIMIT = 3
_CHART = {"en": "Show this as a chart", "ru": "Покажи это графиком"}
_MORE = {"en": "Tell me more: «{section}»", "ru": "Расскажи подробнее: «{section}»"}


def suggest(message: str, reply: Reply, profile: Profile, services: Services, limit: int = LIMIT) -> list[str]:
    """Up to `limit` next questions for this answer, in its language; [] when the profile has them off."""
    if not profile.follow_ups:
        return []
    language = reply.route.language
    intent = reply.route.intent
    found: list[str] = []
    if intent in ("sql", "chart") and reply.route.permitted:
        if reply.columns and reply.rows and reply.chart_png is None and "chart" in profile.intents \
                and _chartable(reply.rows):
            found.append(_CHART.get(language, _CHART["en"]))
        found += _saved_questions(message, reply, profile, services, language, limit + 2)
    elif intent == "docs" and reply.citations:
        sections = [c.section or c.title for c in reply.citations[1:]]
        found += [_MORE.get(language, _MORE["en"]).format(section=s.strip()) for s in sections if s.strip()]
    elif intent in ("smalltalk", "out_of_scope"):
        found += [s.message for s in profile.starters_for(language)]
    return _distinct(message, found)[:limit]


def _chartable(rows: Sequence[tuple[Any, ...]]) -> bool:
    """More than one row, and a number in them: a bar or a line has something to show."""
    return len(rows) > 1 and any(isinstance(v, int | float | Decimal) and not isinstance(v, bool) for v in rows[0])


def _saved_questions(message: str, reply: Reply, profile: Profile, services: Services, language: str,
                     top_k: int) -> list[str]:
    """The saved solved questions nearest to the message, its language first."""
    embedding = reply.route.embedding
    vector = embedding if embedding is not None else services.embedder.embed_queries([message])[0]
    audiences = ("public",) if profile.audience == "public" else ("public", "internal")
    hits = services.store.search(SearchQuery(text=message, embedding=vector, audiences=audiences,
                                             kinds=(EXAMPLE_KIND,), top_k=top_k))
    questions = [parse_example(h.text)[0].strip() for h in hits]
    return sorted(questions, key=lambda q: detect_language(q) != language)  # stable: nearest first within


def _distinct(message: str, questions: Sequence[str]) -> list[str]:
    """Drop repeats and the question just asked (compared by words, any case)."""
    seen = {question_key(message)}
    out = []
    for question in questions:
        key = question_key(question)
        if question and key not in seen:
            seen.add(key)
            out.append(question)
    return out
