"""Baselines that `rag-bot eval sql` runs beside rag_bot, on the same questions and the same LLM server.

- `plain`: the whole schema as DDL + the question, one LLM call, no repair, no retrieval: what any
  text-to-SQL tutorial does, and the bar a pipeline must clear to be worth its extra calls.
- `llamaindex`: llama-index's NLSQLTableQueryEngine over all tables.

Both run their SQL through the runner's read-only role (not the guard, which is rag_bot's own) and are
scored exactly like rag_bot.
"""

# ruff: noqa: E501  (prompt lines are kept whole)

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import date
from typing import Any

from rag_bot.evaluation.sql_items import EvalItem
from rag_bot.evaluation.sql_scoring import ItemResult, score

PLAIN_PROMPT = """Write one PostgreSQL query that answers the question, using this database schema.

{schema}

Question: {question}
Reply with the SQL query only, in a ```sql code block."""


def _llamaindex_engine(reader_url: str, llm: Any, embedder: Any) -> Any:
    """llama-index's NLSQLTableQueryEngine over all tables, driven by our LLMClient and embedder (it
    resolves an embedding model even when it retrieves no tables; its default is OpenAI's)."""
    import sqlalchemy as sa
    from llama_index.core import SQLDatabase
    from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
    from llama_index.core.query_engine import NLSQLTableQueryEngine

    from ingest.db_schema import sqlalchemy_url
    from rag_bot.llm.base import ChatMessage

    class _Wrapped(CustomLLM):
        def __init__(self, client: Any) -> None:
            super().__init__()
            object.__setattr__(self, "_client", client)

        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(context_window=8192, num_output=400, model_name="rag_bot-llm")

        def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
            text = self._client.complete([ChatMessage("user", prompt)], max_tokens=400).text  # type: ignore[attr-defined]
            return CompletionResponse(text=text)

        def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
            yield self.complete(prompt)

    engine = sa.create_engine(sqlalchemy_url(reader_url), poolclass=sa.pool.NullPool)
    database = SQLDatabase(engine)
    from ingest.semantic import LlamaIndexEmbedding

    engine_ = NLSQLTableQueryEngine(sql_database=database, llm=_Wrapped(llm), synthesize_response=False,
                                    embed_model=LlamaIndexEmbedding(embedder))
    return engine_, engine


_baseline_cache: dict[str, Any] = {}


def run_llamaindex_baseline(
    item: EvalItem, llm: Any, embedder: Any, reader_url: str, runner: Any, admin_db_url: str,
    today: date | None = None,
) -> ItemResult:
    """llama-index NLSQLTableQueryEngine on the same question; its SQL is scored the same way."""
    from rag_bot.analytics.sql_runner import SqlExecutionError

    if reader_url not in _baseline_cache:
        _baseline_cache[reader_url] = _llamaindex_engine(reader_url, llm, embedder)
    engine, _ = _baseline_cache[reader_url]
    t0 = time.perf_counter()
    sql_text: str | None = None
    rows: list[tuple[Any, ...]] | None = None
    status, error = "error", None
    try:
        # The same context our pipeline gets: the demo's reference date and Defog's instructions.
        question = item.question
        if today is not None:
            question += f"\n(Today is {today.isoformat()}.)"
        if item.instructions:
            question += f"\n{item.instructions}"
        response = engine.query(question)
        sql_text = str(response.metadata.get("sql_query", "")) or None
        if sql_text:
            result = runner.run_unguarded(sql_text)
            rows, status = result.rows, "ok"
    except SqlExecutionError as exc:
        error = exc.kind
    except Exception as exc:  # noqa: BLE001 - the baseline may fail in its own ways
        error = type(exc).__name__
    correct, _ = score(item, status, rows, admin_db_url) if item.gold else (False, None)
    return ItemResult(
        id=item.id,
        database=item.database,
        category=item.category,
        question=item.question,
        status=status,
        correct=correct,
        sql=sql_text,
        gold=item.gold,
        error=error,
        seconds=round(time.perf_counter() - t0, 2),
        system="llamaindex",
        language=item.language,
    )


def run_plain_baseline(
    item: EvalItem, llm: Any, schema_ddl: str, runner: Any, admin_db_url: str, today: date | None = None
) -> ItemResult:
    """One call: schema DDL + question (+ the item's instructions and the reference date), no repair."""
    from rag_bot.analytics.sql_generation import extract_sql
    from rag_bot.analytics.sql_runner import SqlExecutionError
    from rag_bot.llm.base import ChatMessage

    t0 = time.perf_counter()
    question = item.question
    if today is not None:
        question += f"\n(Today is {today.isoformat()}.)"
    if item.instructions:
        question += f"\n{item.instructions}"
    sql_text: str | None = None
    rows: list[tuple[Any, ...]] | None = None
    status, error = "error", None
    try:
        text = llm.complete([ChatMessage("user", PLAIN_PROMPT.format(schema=schema_ddl, question=question))],
                            max_tokens=400).text
        sql_text = extract_sql(text) or None
        if sql_text:
            rows, status = runner.run_unguarded(sql_text.rstrip().rstrip(";")).rows, "ok"
    except SqlExecutionError as exc:
        error = exc.kind
    except Exception as exc:  # noqa: BLE001 - the baseline may fail in its own ways
        error = type(exc).__name__
    correct, _ = score(item, status, rows, admin_db_url) if item.gold else (False, None)
    return ItemResult(id=item.id, database=item.database, category=item.category, question=item.question,
                      status=status, correct=correct, sql=sql_text, gold=item.gold, error=error,
                      seconds=round(time.perf_counter() - t0, 2), system="plain", language=item.language)


def render_schema_ddl(table_texts: Sequence[str]) -> str:
    """The whole schema as the plain prompt shows it: every table's DDL, in name order."""
    return "\n\n".join(table_texts)
