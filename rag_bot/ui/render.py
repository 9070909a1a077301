"""Turn answers into Chainlit elements (sources as side panels named after their citation)."""

from __future__ import annotations

from collections.abc import Sequence

import chainlit as cl

from rag_bot import prompts
from rag_bot.retrieval import Citation


def citation_label(citation: Citation) -> str:
    section = citation.section
    if section.startswith(citation.title):
        # The heading path usually starts with the document's own H1, which is the title.
        section = section[len(citation.title):].lstrip(" >")
    where = f" — {section}" if section else ""
    page = f", p. {citation.page}" if citation.page else ""
    return f"[{citation.number}] {citation.title}{where}{page}"


def render_sources(citations: Sequence[Citation], language: str) -> tuple[str, list[cl.Text]]:
    """A 'Sources' footer for the message and one side element per source with its passage."""
    if not citations:
        return "", []
    elements = [
        cl.Text(name=citation_label(c), content=f"{c.passage}\n\n— {c.source}", display="side")
        for c in citations
    ]
    footer = f"\n\n**{prompts.text('sources', language)}:** " + ", ".join(e.name for e in elements)
    return footer, elements


async def render_sql(sql: str, language: str) -> None:
    """The SQL that produced the answer, in a collapsible step."""
    async with cl.Step(name="SQL" if language == "en" else "SQL-запрос", type="tool") as step:
        step.output = f"```sql\n{sql}\n```"


def render_table(columns: Sequence[str], rows: Sequence[Sequence[object]], limit: int = 50) -> cl.Dataframe:
    import pandas as pd

    frame = pd.DataFrame([list(r) for r in rows[:limit]], columns=list(columns))
    return cl.Dataframe(data=frame, name="result", display="inline")


def render_chart(png: bytes) -> cl.Image:
    return cl.Image(content=png, name="chart.png", display="inline", mime="image/png")
