"""SqlRunner seam and its PostgreSQL implementation: defence in depth behind the SQL guard.

`PostgresSqlRunner` connects as a dedicated read-only role (`rag_bot.demo.load` creates `rag_bot_reader`,
`rag_bot.analytics.reader_role` hardens it), opens every transaction `READ ONLY`, sets a
`statement_timeout`, fetches at most `row_cap` rows, and uses its own connection pool, separate from the
vector store's. Queries go through psycopg's `stream()`, which always uses the extended protocol:
PostgreSQL then refuses several statements in one string, a third fence against stacking.

Size caps: a query is first described (parsed and planned, not run) to learn its columns, then run
wrapped so that PostgreSQL itself cuts any cell longer than `max_cell_bytes` before sending it
(`SELECT repeat('x', 100000000)` arrives as 4 KB, not 100 MB); rows are read one at a time and the
result stops with "result too large" past `max_result_bytes`. Every connection goes back to the pool
after `DISCARD ALL`, which drops what a rollback keeps: session advisory locks, prepared statements,
session settings.

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
from psycopg import pq
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
    cells_cut: int = 0  # cells longer than the runner's cell cap, cut and ended with CUT_MARKER

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
    "too_large": {
        "en": "The result is too large (over {limit}): please narrow the question (a shorter period, fewer columns, totals instead of rows).",
        "ru": "Результат слишком большой (больше {limit}): сузьте, пожалуйста, вопрос (короче период, меньше столбцов, итоги вместо строк).",
    },
}

# Appended to a cell the runner cut (language-neutral: it also reaches the LLM and stored answers).
CUT_MARKER = " …[cut]"

# Types whose text form is short whatever the value: sent as they are, never measured.
_FIXED_SIZE_OIDS = frozenset(
    {16, 20, 21, 23, 26, 700, 701, 790, 1082, 1083, 1114, 1184, 1186, 1266, 2950}
)  # bool int8 int2 int4 oid float4 float8 money date time timestamp timestamptz interval timetz uuid


class SqlExecutionError(RagBotError):
    """PostgreSQL refused or failed a query. `kind` and `detail` are for the LLM retry, `str()` for users.

    kind: "syntax" | "undefined" | "query" (other 42xxx) | "data" (22xxx) | "timeout" | "permission" |
    "read_only" | "too_large" (over the result byte cap) | "other".
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


def _too_large(limit: int, language: str) -> SqlExecutionError:
    lang = "ru" if language == "ru" else "en"
    shown = f"{limit / 1_000_000:.0f} MB" if limit >= 1_000_000 else f"{limit / 1000:.0f} KB"
    if lang == "ru":
        shown = shown.replace("MB", "МБ").replace("KB", "КБ")
    return SqlExecutionError(_USER_MESSAGES["too_large"][lang].format(limit=shown), kind="too_large",
                             detail=f"result over {limit} bytes; aggregate or select fewer rows/columns",
                             sqlstate=None)


def _cell_bytes(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value)
    return len(str(value))


class _CellCaps:
    """The wrapper that makes PostgreSQL cut long cells, and the merge of its columns back into rows.

    Each variable-size column `c` becomes two: `CASE WHEN too long THEN NULL ELSE c END` (the value,
    typed as before) and `CASE WHEN too long THEN left(c::text, cap) END` (the cut text, else NULL).
    """

    def __init__(self, names: list[str], type_oids: list[int], cap: int) -> None:
        self.names = names
        self.cap = cap
        self._checked = [oid not in _FIXED_SIZE_OIDS for oid in type_oids]

    def wrap(self, query: str) -> str:
        aliases = ", ".join(f"c{i}" for i in range(len(self.names)))
        parts = []
        for i, checked in enumerate(self._checked):
            if not checked:
                parts.append(f"q.c{i}")
                continue
            long = f"pg_catalog.octet_length(q.c{i}::text) > {self.cap:d}"
            parts.append(f"CASE WHEN {long} THEN NULL ELSE q.c{i} END")
            parts.append(f"CASE WHEN {long} THEN pg_catalog.left(q.c{i}::text, {self.cap:d}) END")
        # MATERIALIZED: a plain subquery is flattened, and each reference to q.cN would compute the
        # cell again (four times for a checked column). The CTE is still read row by row, on demand.
        return f"WITH q({aliases}) AS MATERIALIZED ({query}) SELECT {', '.join(parts)} FROM q"

    def merge(self, row: Sequence[Any]) -> tuple[tuple[Any, ...], int]:
        """The row as the query meant it, long cells replaced by their cut text; and how many were cut."""
        out: list[Any] = []
        cut = 0
        j = 0
        for checked in self._checked:
            if not checked:
                out.append(row[j])
                j += 1
                continue
            value, text = row[j], row[j + 1]
            j += 2
            if text is not None:
                # left() counts characters; trim to the byte cap on a character boundary.
                value = text.encode("utf-8")[: self.cap].decode("utf-8", "ignore") + CUT_MARKER
                cut += 1
            out.append(value)
        return tuple(out), cut


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
        max_cell_bytes: a longer cell is cut by PostgreSQL and ends with `CUT_MARKER`.
        max_result_bytes: a result past this many bytes (cells as text) fails with kind "too_large".
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
        max_cell_bytes: int = 4096,
        max_result_bytes: int = 4_000_000,
    ) -> None:
        if max_cell_bytes < 64 or max_result_bytes < max_cell_bytes:
            raise ValueError("max_cell_bytes must be >= 64 and max_result_bytes >= max_cell_bytes")
        for prefix in ("postgresql+psycopg://", "postgres://"):
            if url.startswith(prefix):
                url = "postgresql://" + url[len(prefix):]
        self._url = url
        self._timeout_ms = int(statement_timeout_ms)
        self.row_cap = int(row_cap)
        self.max_cell_bytes = int(max_cell_bytes)
        self.max_result_bytes = int(max_result_bytes)
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

    @staticmethod
    def _discard_session_state(conn: psycopg.Connection) -> None:
        """Drop what survives a rollback (session advisory locks, prepared statements, settings).

        Done here, before the connection goes back to the pool, not in the pool's reset callback:
        psycopg_pool runs that in a worker thread, so a lock would outlive the query for a moment.
        If it fails the connection is closed, and the pool replaces it, which is just as safe.
        """
        try:
            conn.autocommit = True
            conn.execute("DISCARD ALL")
            conn.autocommit = False
        except psycopg.Error:
            logger.warning("could not reset an analytics connection; closing it", exc_info=True)
            conn.close()

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
        self, sql: str, params: Sequence[Any] | None, language: str, fetch: int, *, capped: bool = False
    ) -> tuple[list[str], list[tuple[Any, ...]], bool, int]:
        self._ensure_open()
        try:
            with self._pool.connection(timeout=self._connect_timeout_s) as conn:
                try:
                    conn.execute("SET TRANSACTION READ ONLY")
                    conn.execute(f"SET LOCAL statement_timeout = {self._timeout_ms:d}")
                    caps = self._describe(conn, sql) if capped else None
                    return self._stream(conn, sql, params, fetch, caps, language)
                finally:
                    conn.rollback()  # nothing is ever committed
                    self._discard_session_state(conn)
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

    def _describe(self, conn: psycopg.Connection, sql: str) -> _CellCaps | None:
        """Parse and plan `sql` without running it; None when it returns no rows (nothing to cap)."""
        pgconn = conn.pgconn
        encoding = conn.info.encoding
        result = pgconn.prepare(b"", sql.encode(encoding))
        if result.status != pq.ExecStatus.COMMAND_OK:
            raise pg_errors.error_from_result(result, encoding=encoding)
        described = pgconn.describe_prepared(b"")
        if described.status != pq.ExecStatus.COMMAND_OK:
            raise pg_errors.error_from_result(described, encoding=encoding)
        if described.nfields == 0:
            return None
        names = [(described.fname(i) or b"").decode(encoding) for i in range(described.nfields)]
        return _CellCaps(names, [described.ftype(i) for i in range(described.nfields)], self.max_cell_bytes)

    def _stream(
        self, conn: psycopg.Connection, sql: str, params: Sequence[Any] | None, fetch: int,
        caps: _CellCaps | None, language: str,
    ) -> tuple[list[str], list[tuple[Any, ...]], bool, int]:
        rows: list[tuple[Any, ...]] = []
        size = cut = 0
        text = caps.wrap(sql.strip().rstrip(";")) if caps is not None else sql
        with conn.cursor() as cur:
            # stream() always uses the extended protocol (one statement per string) and reads one row
            # at a time, so we stop after the row cap or the byte cap instead of buffering it all.
            for raw in cur.stream(text, params):
                if caps is not None:
                    row, n = caps.merge(raw)
                    cut += n
                    size += sum(_cell_bytes(v) for v in row if v is not None)
                    if size > self.max_result_bytes:
                        raise _too_large(self.max_result_bytes, language)
                else:
                    row = tuple(raw)
                rows.append(row)
                if len(rows) > fetch:
                    break
            columns = caps.names if caps is not None else [d.name for d in cur.description or []]
        return columns, rows[:fetch], len(rows) > fetch, cut

    def run(self, query: ValidatedQuery, *, language: str = "en") -> SqlResult:
        return self.run_unguarded(query.sql, language=language)

    def run_unguarded(self, sql: str, *, language: str = "en") -> SqlResult:
        """Execute text that did NOT go through the guard; the role and the transaction still hold.

        For tests of the second fence and for the evaluation's gold queries; the chat never calls it.
        """
        started = time.perf_counter()
        columns, rows, truncated, cut = self._execute(sql, None, language, self.row_cap, capped=True)
        elapsed = (time.perf_counter() - started) * 1000
        logger.debug("sql ran in %.0f ms, %d rows, %d cells cut", elapsed, len(rows), cut)
        return SqlResult(columns=columns, rows=rows, truncated=truncated, elapsed_ms=elapsed, cells_cut=cut)

    def explain(self, query: ValidatedQuery, *, language: str = "en") -> QueryPlan:
        _, rows, _, _ = self._execute("EXPLAIN (FORMAT JSON) " + query.sql, None, language, 1)
        plan = rows[0][0]
        if isinstance(plan, str):
            import json

            plan = json.loads(plan)
        top = plan[0]["Plan"]
        return QueryPlan(total_cost=float(top.get("Total Cost", 0.0)), plan_rows=int(top.get("Plan Rows", 0)),
                         raw=top)

    def table_names(self) -> list[str]:
        if self._tables is None:
            _, rows, _, _ = self._execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind IN ('r', 'v', 'm', 'p', 'f') "
                "AND has_table_privilege(c.oid, 'SELECT') ORDER BY 1",
                (self._schema,),
                "en",
                100_000,
            )
            self._tables = [str(r[0]) for r in rows]
        return list(self._tables)
