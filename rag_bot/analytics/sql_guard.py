"""The SQL guard: one read-only SELECT over allowed tables, or a rejection written for the user.

A pure function from SQL text to `ValidatedQuery | SQLRejected`. It parses with sqlglot (PostgreSQL
dialect) and checks the syntax tree, never the text: comments, string literals and odd spacing cannot
hide a second statement or a forbidden call. It is the first fence; `sql_runner.py` adds the second
(read-only role, READ ONLY transaction, statement_timeout, row cap), and either holds on its own.
"""

# ruff: noqa: E501  (user-facing message catalogue lines are kept whole)

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from rag_bot.analytics.sql_allowlist import (
    DATA_TYPES,
    FUNCTION_CLASSES,
    FUNCTION_NAMES,
    MAX_SERIES_ROWS,
    SERIES_CLASSES,
    SYNTAX_CLASSES,
)
from rag_bot.analytics.sql_series import series_rows
from rag_bot.errors import SQLRejected

logger = logging.getLogger(__name__)

DEFAULT_MAX_ROWS = 1000

# Statement and clause types that change data or server state. Checked on every node, so a
# data-modifying CTE (`WITH d AS (DELETE ... RETURNING *) SELECT ...`) is caught as well.
_WRITE_NODES: tuple[type[exp.Expression], ...] = tuple(
    getattr(exp, name)
    for name in (
        "Insert", "Update", "Delete", "Merge", "Create", "Drop", "Alter", "AlterColumn", "TruncateTable",
        "Copy", "Set", "Command", "Grant", "Revoke", "Transaction", "Commit", "Rollback", "Use",
        "Pragma", "LoadData", "Analyze", "Describe", "Cache", "Uncache", "Refresh", "Comment",
    )
    if hasattr(exp, name)
)

_SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_toast"})

_MESSAGES: dict[str, dict[str, str]] = {
    "empty": {
        "en": "There is no query to run.",
        "ru": "Нет запроса для выполнения.",
    },
    "parse": {
        "en": "I could not read the generated query as valid SQL, so I did not run it.",
        "ru": "Сгенерированный запрос не является корректным SQL, поэтому я его не выполнил.",
    },
    "multiple": {
        "en": "I only run one query at a time; this text contains {n} statements.",
        "ru": "Я выполняю только один запрос за раз, а здесь {n} команд(ы).",
    },
    "not_select": {
        "en": "I only run read-only queries (SELECT); this one is {kind}, so I did not run it.",
        "ru": "Я выполняю только запросы на чтение (SELECT); это команда {kind}, я её не выполнил.",
    },
    "write": {
        "en": "I only run read-only queries; this one tries to {kind}, so I did not run it.",
        "ru": "Я выполняю только запросы на чтение; этот пытается выполнить {kind}, я его не выполнил.",
    },
    "into": {
        "en": "I only run read-only queries; SELECT ... INTO would create a table, so I did not run it.",
        "ru": "Я выполняю только запросы на чтение; SELECT ... INTO создаёт таблицу, я его не выполнил.",
    },
    "lock": {
        "en": "I only run read-only queries; this one locks rows (FOR UPDATE/SHARE), so I did not run it.",
        "ru": "Я выполняю только запросы на чтение; этот блокирует строки (FOR UPDATE/SHARE), я его не выполнил.",
    },
    "function": {
        "en": "The query calls {name}(), which is not among the functions I use for analytics (some run hidden SQL or reach files, the server or its settings); I did not run it.",
        "ru": "Запрос вызывает {name}(), которой нет среди функций для аналитики (некоторые выполняют скрытый SQL или обращаются к файлам, серверу, настройкам); я его не выполнил.",
    },
    "syntax": {
        "en": "The query uses {name}, which is not part of the plain analytical SELECT I run; I did not run it.",
        "ru": "Запрос использует конструкцию {name}, которая не входит в обычный аналитический SELECT; я его не выполнил.",
    },
    "type": {
        "en": "The query converts a value to the type {name}, which I do not use for analytics; I did not run it.",
        "ru": "Запрос приводит значение к типу {name}, который я не использую для аналитики; я его не выполнил.",
    },
    "series": {
        "en": "generate_series() needs constant bounds: numbers, or dates with an interval step (e.g. DATE '2025-01-01', DATE '2025-12-01', INTERVAL '1 month'); I did not run it.",
        "ru": "generate_series() нужны постоянные границы: числа или даты с шагом-интервалом (например DATE '2025-01-01', DATE '2025-12-01', INTERVAL '1 month'); я его не выполнил.",
    },
    "series_size": {
        "en": "generate_series() here would make about {rows} rows; I allow at most {limit}. Narrow the range or take a larger step.",
        "ru": "generate_series() здесь дал бы около {rows} строк, а я разрешаю не больше {limit}. Сузьте диапазон или увеличьте шаг.",
    },
    "system": {
        "en": "The query reads the database's system tables ({name}); I only answer from the business tables.",
        "ru": "Запрос читает системные таблицы базы ({name}); я отвечаю только по бизнес-таблицам.",
    },
    "schema": {
        "en": "The query reads {name}, outside the data I am allowed to use.",
        "ru": "Запрос обращается к {name}, а это вне данных, к которым у меня есть доступ.",
    },
    "table": {
        "en": "The query uses a table I do not know or may not read: {name}.",
        "ru": "Запрос использует таблицу, которой нет в доступных мне данных: {name}.",
    },
}


class QueryRejected(SQLRejected):
    """A guard rejection: `str()` is for the user, `rule` and `detail` are for logs and the LLM retry."""

    def __init__(self, message: str, *, rule: str, detail: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.detail = detail


@dataclass(frozen=True)
class ValidatedQuery:
    """SQL that passed the guard, normalised by sqlglot, with its row limit in place."""

    sql: str
    original: str
    tables: frozenset[str]
    limit: int
    limit_added: bool  # True when the guard added or lowered the LIMIT (the result may be truncated)


def _reject(rule: str, language: str, detail: str, **fmt: object) -> QueryRejected:
    lang = "ru" if language == "ru" else "en"
    message = _MESSAGES[rule][lang].format(**fmt)
    logger.info("sql guard rejected (%s): %s", rule, detail)
    return QueryRejected(message, rule=rule, detail=detail)


def _function_name(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return node.sql_name().lower()


def _syntax_name(node: exp.Expr) -> str:
    text = node.sql("postgres") if not isinstance(node, exp.Query) else node.key.upper()
    return text if len(text) <= 40 else type(node).__name__


def _check_function(node: exp.Func, language: str) -> None:
    """Refuse a call unless it is on the allow-list; bound generate_series()."""
    name = _function_name(node)
    allowed = name in FUNCTION_NAMES if isinstance(node, exp.Anonymous) else type(node) in FUNCTION_CLASSES
    if not allowed:
        raise _reject("function", language, f"function {name} ({type(node).__name__})", name=name)
    if type(node) in SERIES_CLASSES:
        rows = series_rows(node)
        if rows is None:
            raise _reject("series", language, f"unbounded {node.sql('postgres')}")
        if rows > MAX_SERIES_ROWS:
            raise _reject("series_size", language, f"{rows} series rows", rows=f"{rows:,}",
                          limit=f"{MAX_SERIES_ROWS:,}")


def _table_allowed(name: str, schema: str, allowed: set[str]) -> bool:
    """`allowed` holds bare names (any allowed schema) and `schema.table` names (that schema only)."""
    if schema:
        return f"{schema}.{name}" in allowed or name in allowed
    return name in allowed or any(entry.endswith("." + name) for entry in allowed)


def _cte_names(tree: exp.Expression) -> set[str]:
    return {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}


def _apply_limit(tree: exp.Expression, max_rows: int) -> tuple[exp.Expression, int, bool]:
    """Add a LIMIT, or lower one above `max_rows`; a non-literal LIMIT is replaced."""
    current = tree.args.get("limit")
    if isinstance(current, exp.Limit):
        value = current.expression
        if isinstance(value, exp.Literal) and value.is_int:
            n = int(value.name)
            if n <= max_rows:
                return tree, n, False
    if isinstance(current, exp.Fetch):
        count = current.args.get("count")
        if isinstance(count, exp.Literal) and count.is_int and int(count.name) <= max_rows:
            return tree, int(count.name), False
        tree.set("limit", None)
    limited = tree.limit(max_rows, copy=False) if isinstance(tree, exp.Query) else tree
    return limited, max_rows, True


def validate_sql(
    sql: str,
    *,
    allowed_tables: Collection[str] | None = None,
    allowed_schemas: Collection[str] = ("public",),
    max_rows: int = DEFAULT_MAX_ROWS,
    language: str = "en",
) -> ValidatedQuery:
    """Accept exactly one read-only SELECT (CTEs and set operations allowed) or raise `QueryRejected`.

    Args:
        sql: the query text (a trailing semicolon is fine).
        allowed_tables: tables the query may read (case-insensitive), as bare names (in any of
            `allowed_schemas`) or as `schema.table` (that schema only, whatever `allowed_schemas`
            says); None allows any table in `allowed_schemas`. System catalogs are always refused.
        allowed_schemas: schemas a qualified table name may use.
        max_rows: the LIMIT added when missing, and the ceiling for an explicit one.
        language: "ru" or "en", for the rejection message.
    """
    text = (sql or "").strip()
    if not text:
        raise _reject("empty", language, "empty text")
    try:
        statements = [s for s in sqlglot.parse(text, read="postgres") if s is not None]
    except (ParseError, TokenError) as exc:
        raise _reject("parse", language, f"parse error: {exc}") from exc
    if not statements:
        raise _reject("empty", language, "only comments")
    if len(statements) > 1:
        raise _reject("multiple", language, f"{len(statements)} statements", n=len(statements))
    tree = statements[0]
    while isinstance(tree, exp.Subquery) and not tree.args.get("alias"):
        tree = tree.this
    if not isinstance(tree, (exp.Select, exp.SetOperation)):
        kind = tree.key.upper() if not isinstance(tree, exp.Command) else str(tree.this).upper()
        rule = "write" if isinstance(tree, _WRITE_NODES) else "not_select"
        raise _reject(rule, language, f"top-level {type(tree).__name__}: {kind}", kind=kind)

    ctes = _cte_names(tree)
    allowed = {t.lower() for t in allowed_tables} if allowed_tables is not None else None
    schemas = {s.lower() for s in allowed_schemas}
    tables: set[str] = set()
    for node in tree.walk():
        if isinstance(node, _WRITE_NODES):
            kind = node.key.upper() if not isinstance(node, exp.Command) else str(node.this).upper()
            raise _reject("write", language, f"nested {type(node).__name__}", kind=kind)
        if isinstance(node, exp.Lock):
            raise _reject("lock", language, "locking clause")
        if isinstance(node, exp.Into):
            raise _reject("into", language, "SELECT INTO")
        if isinstance(node, exp.Func):
            _check_function(node, language)
        elif isinstance(node, exp.DataType):
            if node.this not in DATA_TYPES:
                raise _reject("type", language, f"type {node.sql('postgres')}", name=node.sql("postgres"))
        elif isinstance(node, exp.Dot) and isinstance(node.expression, exp.Func):
            name = node.sql("postgres").split("(")[0]
            raise _reject("function", language, f"qualified function {name}", name=name)
        elif type(node) not in SYNTAX_CLASSES:
            raise _reject("syntax", language, f"node {type(node).__name__}", name=_syntax_name(node))
        if isinstance(node, exp.Table):
            if not isinstance(node.this, exp.Identifier):
                continue  # a table function such as generate_series(); its call is checked as a Func
            name = node.name.lower()
            schema = (node.db or "").lower()
            qualified = f"{schema}.{name}"
            if node.catalog:
                raise _reject("schema", language, f"cross-database {node.sql()}", name=node.sql())
            if schema in _SYSTEM_SCHEMAS or name.startswith("pg_") or schema.startswith("pg_"):
                raise _reject("system", language, f"system table {node.sql()}", name=node.sql())
            if schema and schema not in schemas and qualified not in (allowed or ()):
                raise _reject("schema", language, f"schema {schema}", name=qualified)
            if not schema and name in ctes:
                continue
            if allowed is not None and not _table_allowed(name, schema, allowed):
                shown = qualified if schema else name
                raise _reject("table", language, f"table {shown} not allowed", name=shown)
            tables.add(qualified if schema and qualified in (allowed or ()) else name)

    limited, limit, added = _apply_limit(tree, max_rows)
    normalised = limited.sql(dialect="postgres")
    return ValidatedQuery(
        sql=normalised, original=text, tables=frozenset(tables), limit=limit, limit_added=added
    )
