"""SqlRunner seam and its PostgreSQL implementation: defence in depth behind the SQL guard.

`PostgresSqlRunner` connects as a dedicated read-only role (`rag_bot.demo.load` creates `rag_bot_reader`),
opens every transaction `READ ONLY`, sets a `statement_timeout`, fetches at most `row_cap` rows, and
uses its own connection pool, separate from the vector store's. Queries go through psycopg's `stream()`,
which always uses the extended protocol: PostgreSQL then refuses several statements in one string, a
third fence against stacking.

Errors come back as `SqlExecutionError`: `str()` explains it to the user, `kind` and `detail` (the
PostgreSQL message) go back to the LLM for self-correction.
"""

# ruff: noqa: E501  (user-facing message catalogue lines are kept whole)

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from rag_bot.analytics.sql_guard import ValidatedQuery
from rag_bot.errors import DatabaseUnavailable, RagBotError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SqlResult:
    """Rows of one query (at most the runner's row cap)."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool = False
    elapsed_ms: float = 0.0

    @property
    def row_count(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class QueryPlan:
    """The top of an EXPLAIN plan: what PostgreSQL expects before running anything."""

    total_cost: float
    plan_rows: int
    raw: dict[str, Any] = field(default_factory=dict)


_USER_MESSAGES = {
    "timeout": {
        "en": "The query took too long and was stopped. Try a narrower question (a shorter period, fewer groups).",
        "ru": "Запрос выполнялся слишком долго и был остановлен. Попробуйте сузить вопрос (период, группы).",
    },
    "permission": {
        "en": "The database refused this query: the analytics account may only read the business tables.",
        "ru": "База отказала в выполнении: аналитическая учётная запись может только читать бизнес-таблицы.",
    },
    "read_only": {
        "en": "The database refused this query because it tries to change data; I only read.",
        "ru": "База отказала: запрос пытается изменить данные, а я работаю только на чтение.",
    },
    "query": {
        "en": "I could not build a correct query for this question.",
        "ru": "Не удалось составить корректный запрос к базе для этого вопроса.",
    },
    "data": {
        "en": "The query failed on the data (for example a division by zero or a bad conversion).",
        "ru": "Запрос упал на данных (например, деление на ноль или неверное преобразование).",
    },
}


class SqlExecutionError(RagBotError):
    """PostgreSQL refused or failed a query. `kind` and `detail` are for the LLM retry, `str()` for users.

    kind: "syntax" | "undefined" | "query" (other 42xxx) | "data" (22xxx) | "timeout" | "permission" |
    "read_only" | "other".
    """

    def __init__(self, message: str, *, kind: str, detail: str, sqlstate: str | None) -> None:
        super().__init__(message)
        self.kind = kind
        self.detail = detail
        self.sqlstate = sqlstate

    @property
    def fixable(self) -> bool:
        """Whether a rewritten query may succeed (worth a retry by the LLM)."""
        return self.kind in {"syntax", "undefined", "query", "data", "timeout"}


def _classify(exc: psycopg.Error, language: str) -> SqlExecutionError:
    state = exc.sqlstate or ""
    if isinstance(exc, pg_errors.QueryCanceled):
        kind, key = "timeout", "timeout"
    elif isinstance(exc, pg_errors.InsufficientPrivilege):
        kind, key = "permission", "permission"
    elif isinstance(exc, pg_errors.ReadOnlySqlTransaction):
        kind, key = "read_only", "read_only"
    elif state == "42601":
        kind, key = "syntax", "query"
    elif state in {"42703", "42P01", "42883", "42704"}:
        kind, key = "undefined", "query"
    elif state.startswith("42"):
        kind, key = "query", "query"
    elif state.startswith("22"):
        kind, key = "data", "data"
    else:
        kind, key = "other", "query"
    diag = exc.diag
    detail = (diag.message_primary or str(exc)).strip()
    if diag.message_hint:
        detail += f" HINT: {diag.message_hint}"
    lang = "ru" if language == "ru" else "en"
    return SqlExecutionError(_USER_MESSAGES[key][lang], kind=kind, detail=detail, sqlstate=state or None)


class SqlRunner(Protocol):
    """What the analytics pipeline needs from the analytics database."""

    def run(self, query: ValidatedQuery, *, language: str = "en") -> SqlResult:
        """Execute a query that passed the guard; raises SqlExecutionError."""
        ...

    def explain(self, query: ValidatedQuery, *, language: str = "en") -> QueryPlan:
        """Plan without executing (catches unknown columns and absurd costs); raises SqlExecutionError."""
        ...

    def table_names(self) -> list[str]:
        """Tables the runner's role may read (the guard's allow-list)."""
        ...


class PostgresSqlRunner:
    """Runs guarded SELECTs as a read-only role in READ ONLY transactions, from its own small pool.

    Args:
        url: `postgresql://` URL of the read-only role (e.g. `rag_bot.demo.load.readonly_url(...)`).
        statement_timeout_ms: per-query limit, set with SET LOCAL inside each transaction.
        row_cap: at most this many rows are fetched; `SqlResult.truncated` says when more existed.
        schema: the schema whose tables are offered to the guard.
        pool_size: connections kept by this runner's pool (the store has its own connection).
    """

    def __init__(
        self,
        url: str,
        *,
        statement_timeout_ms: int = 5000,
        row_cap: int = 1000,
        schema: str = "public",
        pool_size: int = 2,
        connect_timeout_s: float = 10.0,
    ) -> None:
        for prefix in ("postgresql+psycopg://", "postgres://"):
            if url.startswith(prefix):
                url = "postgresql://" + url[len(prefix):]
        self._url = url
        self._timeout_ms = int(statement_timeout_ms)
        self.row_cap = int(row_cap)
        self._schema = schema
        self._connect_timeout_s = connect_timeout_s
        self._pool = ConnectionPool(
            url,
            min_size=0,
            max_size=max(1, pool_size),
            kwargs={"autocommit": False, "connect_timeout": int(connect_timeout_s)},
            configure=self._configure,
            open=False,
            name="rag_bot.sql_runner",
        )
        self._opened = False
        self._tables: list[str] | None = None

    @staticmethod
    def _configure(conn: psycopg.Connection) -> None:
        conn.read_only = True  # psycopg then opens every transaction with BEGIN READ ONLY

    def _ensure_open(self) -> None:
        if not self._opened:
            self._pool.open(wait=False)
            self._opened = True

    def close(self) -> None:
        if self._opened:
            self._pool.close()
            self._opened = False

    def __enter__(self) -> PostgresSqlRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _execute(
        self, sql: str, params: Sequence[Any] | None, language: str, fetch: int
    ) -> tuple[list[str], list[tuple[Any, ...]], bool]:
        self._ensure_open()
        try:
            with self._pool.connection(timeout=self._connect_timeout_s) as conn:
                try:
                    conn.execute("SET TRANSACTION READ ONLY")
                    conn.execute("SELECT set_config('statement_timeout', %s, true)", (str(self._timeout_ms),))
                    rows: list[tuple[Any, ...]] = []
                    with conn.cursor() as cur:
                        # stream() always uses the extended protocol (one statement per string) and
                        # lets us stop reading after the row cap instead of buffering the whole result.
                        for row in cur.stream(sql, params):
                            rows.append(tuple(row))
                            if len(rows) > fetch:
                                break
                        columns = [d.name for d in cur.description or []]
                    return columns, rows[:fetch], len(rows) > fetch
                finally:
                    conn.rollback()  # nothing is ever committed
        except PoolTimeout as exc:
            raise DatabaseUnavailable(
                "The analytics database is not reachable. Check that it is running (`rag-bot doctor`)."
            ) from exc
        except psycopg.OperationalError as exc:
            if isinstance(exc, pg_errors.QueryCanceled):
                raise _classify(exc, language) from exc
            raise DatabaseUnavailable(
                "Lost the connection to the analytics database; please ask again in a moment."
            ) from exc
        except psycopg.Error as exc:
            raise _classify(exc, language) from exc

    def run(self, query: ValidatedQuery, *, language: str = "en") -> SqlResult:
        return self.run_unguarded(query.sql, language=language)

    def run_unguarded(self, sql: str, *, language: str = "en") -> SqlResult:
        """Execute text that did NOT go through the guard; the role and the transaction still hold.

        For tests of the second fence and for the evaluation's gold queries; the chat never calls it.
        """
        started = time.perf_counter()
        columns, rows, truncated = self._execute(sql, None, language, self.row_cap)
        elapsed = (time.perf_counter() - started) * 1000
        logger.debug("sql ran in %.0f ms, %d rows", elapsed, len(rows))
        return SqlResult(columns=columns, rows=rows, truncated=truncated, elapsed_ms=elapsed)

    def explain(self, query: ValidatedQuery, *, language: str = "en") -> QueryPlan:
        _, rows, _ = self._execute("EXPLAIN (FORMAT JSON) " + query.sql, None, language, 1)
        plan = rows[0][0]
        if isinstance(plan, str):
            import json

            plan = json.loads(plan)
        top = plan[0]["Plan"]
        return QueryPlan(total_cost=float(top.get("Total Cost", 0.0)), plan_rows=int(top.get("Plan Rows", 0)),
                         raw=top)

    def table_names(self) -> list[str]:
        if self._tables is None:
            _, rows, _ = self._execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind IN ('r', 'v', 'm', 'p', 'f') "
                "AND has_table_privilege(c.oid, 'SELECT') ORDER BY 1",
                (self._schema,),
                "en",
                100_000,
            )
            self._tables = [str(r[0]) for r in rows]
        return list(self._tables)
