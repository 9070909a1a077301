"""The data path: a question about the company database -> one guarded, read-only SQL query -> an
explained result; a chart request -> the LLM's matplotlib code run in the sandbox -> a PNG.

    schema_context.py  the ingested tables (and solved examples) a question needs
    sql_generation.py  question + schema -> SQL (LLM)
    sql_guard.py       one read-only SELECT over allowed tables, or a clear rejection
    sql_runner.py      the read-only role, statement timeout, row caps
    narration.py       the result in words; every number comes from the result
    pipeline.py        answer_analytics(): the steps above with repairs
    charts.py          answer_chart(): code from the LLM -> sandbox -> PNG
"""

from rag_bot.analytics.pipeline import AnalyticsAnswer, AnalyticsOptions, answer_analytics
from rag_bot.analytics.schema_context import add_solved_example
from rag_bot.analytics.sql_guard import QueryRejected, ValidatedQuery, validate_sql
from rag_bot.analytics.sql_runner import PostgresSqlRunner, SqlExecutionError, SqlResult, SqlRunner

__all__ = [
    "AnalyticsAnswer",
    "AnalyticsOptions",
    "PostgresSqlRunner",
    "QueryRejected",
    "SqlExecutionError",
    "SqlResult",
    "SqlRunner",
    "ValidatedQuery",
    "add_solved_example",
    "answer_analytics",
    "validate_sql",
]
