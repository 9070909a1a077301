"""Analytics: questions about the company database answered with one guarded, read-only SQL query."""

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
