"""Turn answers into Chainlit elements (sources as side panels named after their citation)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import PurePath
from typing import TYPE_CHECKING

import chainlit as cl

from rag_bot import prompts
from rag_bot.analytics.formatting import format_cell
from rag_bot.assistant.sessions import jsonable
from rag_bot.documents.retrieval import Citation
from rag_bot.documents.sources import display_source
from rag_bot.errors import DatabaseUnavailable, LLMUnavailable, RagBotError

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)


def citation_label(citation: Citation) -> str:
    section = citation.section
    if section.startswith(citation.title):
        # The heading path usually starts with the document's own H1, which is the title.
        section = section[len(citation.title):].lstrip(" >")
    where = f" — {section}" if section else ""
    page = f", p. {citation.page}" if citation.page else ""
    return f"[{citation.number}] {citation.title}{where}{page}"


def source_panel(citation: Citation, root: PurePath | None = None) -> str:
    """The side panel of one source: the passage, then the document's title and knowledge-base path."""
    return f"{citation.passage}\n\n— {citation.title} · `{display_source(citation.source, root)}`"


def render_sources(citations: Sequence[Citation], language: str,
                   root: PurePath | None = None) -> tuple[str, list[cl.Text]]:
    """A 'Sources' footer for the message and one side element per source: its passage, then the
    document's title and its path in the knowledge base (never the server's absolute path)."""
    if not citations:
        return "", []
    elements = [cl.Text(name=citation_label(c), content=source_panel(c, root), display="side") for c in citations]
    footer = f"\n\n**{prompts.text('sources', language)}:** " + ", ".join(e.name for e in elements)
    return footer, elements


async def render_sql(sql: str, language: str) -> None:
    """The SQL that produced the answer, in a collapsible step."""
    async with cl.Step(name="SQL" if language == "en" else "SQL-запрос", type="tool") as step:
        step.output = f"```sql\n{sql}\n```"


def table_cell(value: object, column: str = "", language: str = "en") -> object:
    """A result value as the table shows it (rag_bot.analytics.formatting): grouped digits, dates as people write them.

    Chainlit sends the frame as JSON with ISO timestamps, so a raw date would read
    "2024-01-01T00:00:00.000" and a Decimal `382558448.90` would lose its grouping; anything else that
    is not plain JSON goes through `jsonable`, as the API's rows do.
    """
    shown = format_cell(value, column, language)
    return shown if isinstance(shown, str) or shown is None else jsonable(shown)


def result_frame(columns: Sequence[str], rows: Sequence[Sequence[object]], limit: int = 50,
                 language: str = "en") -> pd.DataFrame:
    """The first `limit` result rows as the frame the chat's table element shows."""
    import pandas as pd

    return pd.DataFrame([[table_cell(v, c, language) for v, c in zip(r, columns, strict=False)] for r in rows[:limit]],
                        columns=list(columns))


def render_table(columns: Sequence[str], rows: Sequence[Sequence[object]], limit: int = 50,
                 language: str = "en") -> cl.Dataframe:
    return cl.Dataframe(data=result_frame(columns, rows, limit, language), name="result", display="inline")


def render_chart(png: bytes) -> cl.Image:
    return cl.Image(content=png, name="chart.png", display="inline", mime="image/png")


def render_error(exc: BaseException, language: str) -> str:
    """What the chat says when a turn failed: a short text in the user's language, never the error's own words.

    RagBotError messages are written for whoever runs the bot (commands, paths, URLs), driver errors
    may hold SQL or addresses: both go to the log, the user gets the catalogue text.
    """
    if isinstance(exc, LLMUnavailable):
        logger.error("LLM unavailable: %s", exc)
        return prompts.text("llm_down", language)
    if isinstance(exc, DatabaseUnavailable):
        logger.error("database unavailable: %s", exc)
        return prompts.text("db_down", language)
    if isinstance(exc, RagBotError):
        logger.error("could not answer: %s", exc)
    else:
        logger.error("unexpected error while answering", exc_info=exc)
    return prompts.text("internal_error", language)
