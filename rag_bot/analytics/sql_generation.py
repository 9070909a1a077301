"""Question + schema context -> one PostgreSQL SELECT (or a reasoned refusal), written by the LLM.

With `constrained=True` the reply is a JSON object enforced by the server's structured output
(llama.cpp grammar / vLLM structured_outputs), so the SQL is never fished out of prose. Without it,
the first ```sql block (or the text from the first SELECT/WITH) is taken: kept only to measure what
the constraint is worth.
"""

# ruff: noqa: E501  (prompt and message catalogue lines are kept whole)

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from rag_bot.analytics.schema_context import SchemaContext
from rag_bot.errors import LLMUnavailable
from rag_bot.llm.base import ChatMessage, LLMClient

logger = logging.getLogger(__name__)

STATUSES = ("answerable", "unclear", "no_data")

SQL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"sql": {"type": "string", "minLength": 8}},
    "required": ["sql"],
}
GATED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": list(STATUSES)},
        "sql": {"type": "string"},
    },
    "required": ["status", "sql"],
}

SYSTEM = """You are a PostgreSQL expert. Write one PostgreSQL SELECT query (CTEs allowed) that answers \
the user's question using only the tables and columns below.
Rules:
- Use only the listed tables and columns; join them with the listed joins. Qualify columns with table aliases.
- Use the listed column values exactly for text filters; for free text use ILIKE.
- Return only the columns the question asks for (plus a name/label column for grouped results).
- For dates, use half-open ranges on literal dates (col >= DATE '2024-01-01' AND col < DATE '2025-01-01').
- For ratios, cast to float and use NULLIF to avoid division by zero.
- Never write INSERT, UPDATE, DELETE, DDL or anything that changes data.{gate}{format}
{periods}

Database tables:
{schema}"""

GATE = """
Before writing SQL decide the status:
- "answerable": the tables below contain the data to answer the question.
- "unclear": the question is too vague to turn into one query (ask the user to clarify).
- "no_data": the database has no data for this question (e.g. general knowledge, opinions, data not stored).
When the status is not "answerable", sql is an empty string."""

CONSTRAINED_FORMAT = '\nReply with a JSON object: {"sql": "<the query>"}.'
GATED_FORMAT = '\nReply with a JSON object: {"status": "answerable" | "unclear" | "no_data", "sql": "<the query or empty>"}.'
FREE_FORMAT = "\nReply with the SQL query only, in a ```sql code block."


def _quarter_start(day: date) -> date:
    return date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)


def _shift_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


_PERIOD_NAMES_RU = {
    "this_month": "этот месяц", "last_month": "прошлый месяц", "this_quarter": "этот квартал",
    "last_quarter": "прошлый квартал", "this_year": "этот год", "last_year": "прошлый год",
}


def period_hints(today: date) -> str:
    """Relative periods as literal half-open ranges: small models get "last quarter" wrong otherwise."""
    lines = "\n".join(
        f"- {key.replace('_', ' ')} ({_PERIOD_NAMES_RU[key]}): '{start.isoformat()}' to '{end.isoformat()}' "
        "(end excluded)"
        for key, (start, end) in _periods(today).items()
    )
    return f"Today is {today.isoformat()}. Relative periods:\n{lines}"


_PERIOD_PHRASES: list[tuple[str, str]] = [
    # (regex over the question, period key); Russian forms cover the usual cases of the phrase.
    (r"\b(last|previous|prior) quarter\b|прошл\w* квартал\w*|предыдущ\w* квартал\w*", "last_quarter"),
    (r"\b(this|current) quarter\b|(этот|этом|текущ\w*) квартал\w*", "this_quarter"),
    (r"\b(last|previous|prior) month\b|прошл\w* месяц\w*|предыдущ\w* месяц\w*", "last_month"),
    (r"\b(this|current) month\b|(этот|этом|текущ\w*) месяц\w*", "this_month"),
    (r"\b(last|previous|prior) year\b|прошл\w* год\w*|предыдущ\w* год\w*", "last_year"),
    (r"\b(this|current) year\b|(этот|этом|текущ\w*) год\w*", "this_year"),
]


def _periods(today: date) -> dict[str, tuple[date, date]]:
    month, quarter, year = today.replace(day=1), _quarter_start(today), date(today.year, 1, 1)
    return {
        "this_month": (month, _shift_months(month, 1)),
        "last_month": (_shift_months(month, -1), month),
        "this_quarter": (quarter, _shift_months(quarter, 3)),
        "last_quarter": (_shift_months(quarter, -3), quarter),
        "this_year": (year, date(today.year + 1, 1, 1)),
        "last_year": (date(today.year - 1, 1, 1), year),
    }


def annotate_periods(question: str, today: date) -> str:
    """'revenue last quarter' -> 'revenue last quarter [2025-07-01 to before 2025-10-01]'.

    A 1.5B model copies dates from the question far more reliably than it does calendar arithmetic,
    even with the ranges listed in the system prompt; measured on the demo set.
    """
    periods = _periods(today)
    for pattern, key in _PERIOD_PHRASES:
        start, end = periods[key]
        dates = f" [{start.isoformat()} to before {end.isoformat()}]"

        def with_dates(m: re.Match[str], dates: str = dates) -> str:
            return m.group(0) + dates

        question = re.sub(pattern, with_dates, question, count=1, flags=re.I)
    return question


@dataclass(frozen=True)
class Generated:
    """One LLM attempt: a status and (when answerable) the SQL text."""

    status: str
    sql: str
    raw: str = ""


def build_messages(
    question: str,
    context: SchemaContext,
    *,
    today: date,
    constrained: bool,
    gate: bool,
    instructions: str | None = None,
    history: Sequence[ChatMessage] | None = None,
) -> list[ChatMessage]:
    # Fixed text first, the schema next, what varies per question last: the server's prefix cache
    # then reuses everything up to the schema (see schema_context.retrieve_schema_context).
    reply_format = (GATED_FORMAT if gate else CONSTRAINED_FORMAT) if constrained else FREE_FORMAT
    system = SYSTEM.format(periods=period_hints(today), schema=context.render(), gate=GATE if gate else "",
                           format=reply_format)
    messages = [ChatMessage("system", system)]
    for example_q, example_sql in context.examples:
        messages.append(ChatMessage("user", example_q))
        messages.append(ChatMessage("assistant", _format_reply(example_sql, constrained, gate)))
    user = annotate_periods(question.strip(), today)
    earlier = [m.content for m in (history or []) if m.role == "user"][-2:]
    if earlier:
        user = "Earlier questions in this conversation: " + " | ".join(earlier) + "\nQuestion: " + user
    if instructions:
        user += f"\nInstructions: {instructions.strip()}"
    messages.append(ChatMessage("user", user))
    return messages


def _format_reply(sql: str, constrained: bool, gate: bool) -> str:
    import json

    if not constrained:
        return f"```sql\n{sql}\n```"
    payload = {"status": "answerable", "sql": sql} if gate else {"sql": sql}
    return json.dumps(payload, ensure_ascii=False)


_FENCE = re.compile(r"```(?:sql|postgresql)?\s*(.*?)```", re.S | re.I)
_START = re.compile(r"\b(WITH|SELECT)\b", re.I)


def extract_sql(text: str) -> str:
    """The SQL inside free text: the first fenced block, else everything from the first SELECT/WITH."""
    match = _FENCE.search(text)
    if match:
        return match.group(1).strip()
    start = _START.search(text)
    return text[start.start():].strip() if start else text.strip()


def generate_sql(
    llm: LLMClient,
    messages: Sequence[ChatMessage],
    *,
    constrained: bool,
    gate: bool,
    temperature: float | None = None,
    max_tokens: int = 400,
) -> Generated:
    """One attempt. A broken structured reply (e.g. cut by max_tokens) comes back as an empty SQL."""
    if not constrained:
        text = llm.complete(messages, max_tokens=max_tokens).text
        return Generated("answerable", extract_sql(text), text)
    try:
        value = llm.complete_json(messages, GATED_SCHEMA if gate else SQL_SCHEMA, max_tokens=max_tokens,
                                  temperature=temperature)
    except LLMUnavailable as exc:
        if "structured output" in str(exc):
            logger.info("unusable structured reply: %s", exc)
            return Generated("answerable", "", "")
        raise
    status = str(value.get("status", "answerable")) if gate else "answerable"
    if status not in STATUSES:
        status = "answerable"
    sql = str(value.get("sql") or "").strip()
    if status == "answerable" and not sql:
        status = "answerable"
    return Generated(status, sql, str(value))


def repair_message(sql: str, problem: str, tables: Sequence[str], language_hint: str = "",
                   columns: Mapping[str, Sequence[str]] | None = None) -> ChatMessage:
    """The follow-up turn that asks the LLM to fix its query (self-correction), with the real column
    names of the tables it used: a small model repairs from candidates, not from "column x does not exist"."""
    listed = "".join(f"\nColumns of {table}: {', '.join(cols)}." for table, cols in (columns or {}).items())
    return ChatMessage(
        "user",
        f"That query failed: {problem}\nAvailable tables: {', '.join(tables)}.{listed}\n"
        "Write a different, corrected query for the same question, using only these tables and columns."
        + language_hint,
    )


EMPTY_RESULT_HINT = (
    "That query returned no rows. Check the filters: the exact text values listed in the schema, "
    "letter case, date ranges and join conditions. Write a corrected query for the same question."
)
