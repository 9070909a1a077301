"""Load the TechnoSnab demo database (`rag-bot demo load`): create it, run schema.sql, COPY the generated
tables, ANALYZE, and create the read-only role the SQL runner connects as."""

# ruff: noqa: E501

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql

from rag_bot.db import plain_url, readonly_url
from rag_bot.demo import GENERATOR_VERSION, TABLES
from rag_bot.demo.data import generate_demo_data
from rag_bot.errors import ConfigError, DatabaseUnavailable

logger = logging.getLogger(__name__)

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "knowledge_base" / "db" / "schema.sql"

_MARKER = re.compile(r"rag_bot demo database; generator=(\d+); state=(\w+)")
# Identifiers end up in DDL; sql.Identifier quotes them, the pattern keeps them boring on purpose.
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")



@dataclass(frozen=True)
class DemoLoadReport:
    """What `load_demo_database` did: rows per table, wall time, where the read-only role connects."""

    db_name: str
    rows: dict[str, int]
    seconds: float
    readonly_url: str
    reloaded: bool
    generator_version: int = GENERATOR_VERSION

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())



# --------------------------------------------------------------------------------------------------
# Loader
# --------------------------------------------------------------------------------------------------


def _check_ident(name: str, what: str) -> None:
    if not _IDENT.match(name):
        raise ConfigError(f"The {what} name {name!r} is not a plain identifier; use letters, digits and '_'.")


def _connect(url: str, **kwargs: object) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(plain_url(url), **kwargs)  # type: ignore[arg-type]
    except psycopg.OperationalError as err:
        raise DatabaseUnavailable(
            f"Cannot connect to PostgreSQL to load the demo database ({err.__class__.__name__}). "
            "Start it (the embedded server starts with `rag-bot serve`) or fix RAG_BOT_DATABASE_URL."
        ) from err


def _marker_state(admin: psycopg.Connection[Any], db_name: str) -> tuple[bool, int | None, str | None]:
    row = admin.execute(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (db_name,)
    ).fetchone()
    if row is None:
        return False, None, None
    match = _MARKER.search(row[0] or "")
    return True, (int(match.group(1)) if match else None), (match.group(2) if match else None)


def _set_marker(conn: psycopg.Connection[Any], db_name: str, state: str) -> None:
    text = (
        f"TechnoSnab demo analytics data. rag_bot demo database; generator={GENERATOR_VERSION}; state={state}"
    )
    conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(db_name), sql.Literal(text)))


def _to_csv(df: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    out = df.copy()
    for col in out.columns:
        if out[col].dtype.kind == "M":
            fmt = "%Y-%m-%d" if col.endswith(("_date", "_on")) else "%Y-%m-%d %H:%M"
            out[col] = out[col].dt.strftime(fmt)
    # %.6f keeps money exact after its 2-decimal rounding and never writes 1e-05 notation.
    out.to_csv(buf, index=False, header=False, float_format="%.6f", na_rep="")
    return buf.getvalue().encode()


def _copy_table(conn: psycopg.Connection[Any], table: str, df: pd.DataFrame) -> None:
    stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, df.columns))
    )
    with conn.cursor() as cur, cur.copy(stmt) as copy:
        copy.write(_to_csv(df))


def _ensure_readonly_role(admin_url: str, db_name: str, role: str, password: str | None) -> None:
    """LOGIN role that can read every table and nothing else; read-only by default as a second fence."""
    with _connect(admin_url, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        admin.execute(
            sql.SQL(
                verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                "NOBYPASSRLS PASSWORD {}"
            ).format(sql.Identifier(role), sql.Literal(password) if password else sql.SQL("NULL"))
        )
        for setting, value in (("default_transaction_read_only", "on"), ("statement_timeout", "30s")):
            admin.execute(
                sql.SQL("ALTER ROLE {} IN DATABASE {} SET {} = {}").format(
                    sql.Identifier(role), sql.Identifier(db_name), sql.Identifier(setting), sql.Literal(value)
                )
            )
        admin.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(db_name)))
        admin.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(db_name), sql.Identifier(role)
            )
        )
    with _connect(admin_url, dbname=db_name, autocommit=True) as conn:
        ident = sql.Identifier(role)
        conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(ident))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(ident))
    from rag_bot.analytics.reader_role import harden_reader_role

    try:
        harden_reader_role(admin_url, role, dbname=db_name)  # the second wall: no dangerous built-ins
    except ConfigError as err:  # a CREATEDB + CREATEROLE admin cannot revoke built-ins; the guard still holds
        logger.warning("read-only role %s not hardened: %s", role, err)


def _count_rows(admin_url: str, db_name: str) -> dict[str, int]:
    with _connect(admin_url, dbname=db_name) as conn:
        return {
            t: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()[0]  # type: ignore[index]
            for t in TABLES
        }


def load_demo_database(
    admin_url: str,
    *,
    db_name: str = "company",
    readonly_role: str = "rag_bot_reader",
    readonly_password: str | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> DemoLoadReport:
    """Create and fill the TechnoSnab demo database; a no-op (but for the role) when it is already loaded.

    Args:
        admin_url: a superuser (or CREATEDB + CREATEROLE) URL on the server, any database.
        db_name: the demo database; kept apart from the vector store's database.
        readonly_role: LOGIN role the SQL runner uses: CONNECT, USAGE on public, SELECT on all tables.
        readonly_password: its password; None leaves it without one (fine for the embedded server's
            trust auth on a unix socket, not for a networked server).
        force: drop and reload even when the database is complete and of the current generator version.
        progress: called with one short line per step (the CLI echoes them).

    Returns:
        DemoLoadReport with exact row counts, wall time and the read-only URL.

    Raises:
        ConfigError: `db_name` exists but was not created by this loader (pass force to replace it).
        DatabaseUnavailable: the server cannot be reached.
    """
    _check_ident(db_name, "database")
    _check_ident(readonly_role, "role")
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    ro_url = readonly_url(admin_url, db_name, readonly_role, readonly_password)
    with _connect(admin_url, autocommit=True) as admin:
        exists, version, state = _marker_state(admin, db_name)
        if exists and not force and version == GENERATOR_VERSION and state == "complete":
            say(f"database {db_name} already loaded (generator {version}); use force to reload")
            _ensure_readonly_role(admin_url, db_name, readonly_role, readonly_password)
            rows = _count_rows(admin_url, db_name)
            return DemoLoadReport(db_name, rows, time.perf_counter() - t0, ro_url, reloaded=False)
        if exists and not force and version is None:
            raise ConfigError(
                f"Database {db_name!r} already exists and was not created by `rag-bot demo load`; "
                "choose another name or reload it with --force (this drops it)."
            )
        if exists:
            say(f"dropping database {db_name}")
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(db_name)))
        say(f"creating database {db_name}")
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(sql.Identifier(db_name))
        )
        _set_marker(admin, db_name, "loading")

    say("generating data")
    data = generate_demo_data()
    with _connect(admin_url, dbname=db_name) as conn:
        say("creating tables")
        conn.execute(SCHEMA_FILE.read_text(encoding="utf-8"))
        for table in TABLES:
            say(f"copying {table} ({len(data[table]):,} rows)")
            _copy_table(conn, table, data[table])
        conn.commit()
        say("analyzing")
        conn.execute("ANALYZE")
        conn.commit()
    say(f"granting read-only access to {readonly_role}")
    _ensure_readonly_role(admin_url, db_name, readonly_role, readonly_password)
    with _connect(admin_url, autocommit=True) as admin:
        _set_marker(admin, db_name, "complete")
    rows = _count_rows(admin_url, db_name)
    seconds = time.perf_counter() - t0
    logger.info("demo database %s loaded: %d rows in %.1f s", db_name, sum(rows.values()), seconds)
    return DemoLoadReport(db_name, rows, seconds, ro_url, reloaded=True)
