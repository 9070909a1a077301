"""The second wall in PostgreSQL: the analytics reader role loses the built-ins that reach past SELECT.

The SQL guard refuses these calls; this makes the database refuse them too, for the day the guard has
a hole. It works on any company database, not only the demo (`rag-bot db harden-reader URL`), and is
idempotent. What it does, as a superuser connected to the company database:

1. `REVOKE EXECUTE ... FROM PUBLIC` on `DANGEROUS_FUNCTIONS` (every overload): built-ins are executable
   by PUBLIC, and a privilege granted to PUBLIC cannot be taken from one role alone; revoking it from
   PUBLIC is what works. Function privileges live in each database, so other databases keep theirs.
2. Everyone else keeps them: the same functions are granted to a NOLOGIN role (`rag_bot_builtins`),
   and every existing login/group role of the cluster, but the reader and the roles the reader
   inherits from, is made a member. Applications that take advisory locks (job queues, migration
   tools) or use large objects keep working. A role created later needs `GRANT rag_bot_builtins TO
   new_role` (or a re-run of the command).
3. Role settings for the reader in that database: `default_transaction_read_only`,
   `statement_timeout`, `idle_in_transaction_session_timeout` (a client that stops half way cannot
   hold a snapshot and locks for ever) and `temp_file_limit` (a huge sort cannot fill the disk).
4. Verify: the reader must have EXECUTE on none of them (an inherited grant is named in the error).

Deliberately NOT revoked: `current_setting` / `set_config` (row-level security policies and tools such
as PostgREST call them as ordinary users; a setting changed by the reader is undone by the runner's
rollback and DISCARD ALL, and superuser-only settings stay unreadable), `pg_advisory_unlock_all` (the
runner's clean-up may use it), and catalog tables (PostgreSQL lets every role read `pg_class`,
`pg_roles`, `pg_settings` by design; the guard refuses them, and `pg_authid` with the password hashes
is superuser-only anyway).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from rag_bot.errors import ConfigError

logger = logging.getLogger(__name__)

# pg_catalog functions the reader loses, by name (all overloads), grouped by why.
DANGEROUS_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "run SQL written in a string": (
        "ts_stat", "ts_rewrite", "query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema",
        "cursor_to_xml", "cursor_to_xmlschema", "table_to_xml", "table_to_xmlschema",
        "table_to_xml_and_xmlschema", "schema_to_xml", "schema_to_xmlschema", "schema_to_xml_and_xmlschema",
        "database_to_xml", "database_to_xmlschema", "database_to_xml_and_xmlschema",
    ),
    "sleep (hold a connection and a snapshot)": ("pg_sleep", "pg_sleep_for", "pg_sleep_until"),
    "take locks that outlive the query": (
        "pg_advisory_lock", "pg_advisory_lock_shared", "pg_advisory_unlock", "pg_advisory_unlock_shared",
        "pg_advisory_xact_lock", "pg_advisory_xact_lock_shared", "pg_try_advisory_lock",
        "pg_try_advisory_lock_shared", "pg_try_advisory_xact_lock", "pg_try_advisory_xact_lock_shared",
    ),
    "read and write large objects": (
        "lo_close", "lo_creat", "lo_create", "lo_export", "lo_from_bytea", "lo_get", "lo_import", "lo_lseek",
        "lo_lseek64", "lo_open", "lo_put", "lo_tell", "lo_tell64", "lo_truncate", "lo_truncate64",
        "lo_unlink", "loread", "lowrite",
    ),
    "read server files": (
        "pg_read_file", "pg_read_binary_file", "pg_stat_file", "pg_ls_dir", "pg_ls_logdir", "pg_ls_waldir",
        "pg_ls_tmpdir", "pg_ls_archive_statusdir", "pg_ls_logicalmapdir", "pg_ls_logicalsnapdir",
        "pg_ls_replslotdir", "pg_ls_summariesdir",
    ),
    "stop other sessions": ("pg_cancel_backend", "pg_terminate_backend"),
}
# Extension functions, in whatever schema the extension lives: dblink (other servers), tablefunc's
# crosstab/connectby and xml2's xpath_table (SQL in a string).
EXTENSION_FUNCTION_PATTERN = r"^(dblink.*|crosstab\d*|connectby|xpath_table)$"

BUILTINS_ROLE = "rag_bot_builtins"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # interpolated as identifiers: validated first


@dataclass(frozen=True)
class HardeningReport:
    """What `harden_reader_role` changed, for the CLI and the logs."""

    role: str
    database: str
    functions: list[str]  # regprocedure signatures revoked from PUBLIC
    members: list[str]  # roles given BUILTINS_ROLE (keep the functions)
    settings: dict[str, str]


def _functions(conn: psycopg.Connection[Any]) -> list[tuple[int, str]]:
    names = [name for group in DANGEROUS_FUNCTIONS.values() for name in group]
    rows = conn.execute(
        "SELECT p.oid, p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE (n.nspname = 'pg_catalog' AND p.proname = ANY(%s)) OR (n.nspname <> 'pg_catalog' AND p.proname ~ %s) "
        "ORDER BY 2",
        (names, EXTENSION_FUNCTION_PATTERN),
    ).fetchall()
    return [(int(oid), str(signature)) for oid, signature in rows]


def harden_reader_role(
    admin_url: str,
    role: str,
    *,
    dbname: str | None = None,
    statement_timeout_ms: int = 30_000,
    idle_in_transaction_timeout_ms: int = 10_000,
    temp_file_limit: str = "1GB",
    keep_for_other_roles: bool = True,
) -> HardeningReport:
    """Revoke the dangerous built-ins from the reader (via PUBLIC) and set its timeouts; idempotent.

    Args:
        admin_url: a superuser URL of the company database (function privileges are per database).
        role: the read-only role the SQL runner logs in as.
        dbname: the company database, when `admin_url` names another one on the same server.
        statement_timeout_ms: the role's default; the runner sets a shorter one per query.
        idle_in_transaction_timeout_ms: a session idle inside a transaction this long is closed.
        temp_file_limit: the most temporary-file space one of its queries may use.
        keep_for_other_roles: grant the functions back to every other role through BUILTINS_ROLE.

    Raises:
        ConfigError: the role is unknown or not a plain identifier, the connection is not a
            superuser's, or the reader can still execute one of the functions afterwards.
    """
    for name in (role, BUILTINS_ROLE):
        if not _IDENT.match(name):
            raise ConfigError(f"The role name {name!r} is not a plain identifier; use letters, digits and '_'.")
    if not re.match(r"^\d+\s*(kB|MB|GB|TB)?$", temp_file_limit):
        raise ConfigError(f"temp_file_limit {temp_file_limit!r} must look like '1GB' or '500MB'.")
    extra: dict[str, Any] = {"dbname": dbname} if dbname else {}
    with psycopg.connect(_plain(admin_url), autocommit=True, **extra) as conn:
        me = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        if not me or not me[0]:
            raise ConfigError(
                "Hardening the reader role needs a superuser connection to the company database "
                "(built-in functions belong to the bootstrap superuser); pass a superuser URL."
            )
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
            raise ConfigError(f"The role {role!r} does not exist; create the read-only role first.")
        database = str(conn.info.dbname)
        functions = _functions(conn)
        ident = sql.Identifier(role)
        with conn.transaction():
            members: list[str] = []
            if keep_for_other_roles:
                if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (BUILTINS_ROLE,)).fetchone() is None:
                    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(BUILTINS_ROLE)))
            for _oid, signature in functions:
                target = sql.SQL(signature)  # regprocedure text: schema-qualified, quoted where needed
                conn.execute(sql.SQL("REVOKE EXECUTE ON FUNCTION {} FROM PUBLIC").format(target))
                conn.execute(sql.SQL("REVOKE EXECUTE ON FUNCTION {} FROM {}").format(target, ident))
                if keep_for_other_roles:
                    conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(
                        target, sql.Identifier(BUILTINS_ROLE)))
            if keep_for_other_roles:
                members = _add_members(conn, role)
            settings = {
                "default_transaction_read_only": "on",
                "statement_timeout": f"{int(statement_timeout_ms)}ms",
                "idle_in_transaction_session_timeout": f"{int(idle_in_transaction_timeout_ms)}ms",
                "temp_file_limit": temp_file_limit.replace(" ", ""),
            }
            for setting, value in settings.items():
                conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} SET {} = {}").format(
                    ident, sql.Identifier(database), sql.Identifier(setting), sql.Literal(value)))
        still = [sig for oid, sig in functions
                 if conn.execute("SELECT has_function_privilege(%s, %s, 'EXECUTE')", (role, oid)).fetchone()[0]]  # type: ignore[index]
        if still:
            raise ConfigError(
                f"The role {role} can still execute {', '.join(still[:5])}: it inherits them from a role "
                "that was granted EXECUTE directly. Revoke that grant or that membership, then run again."
            )
    logger.info("hardened role %s in %s: %d functions revoked from PUBLIC, %d roles keep them",
                role, database, len(functions), len(members))
    return HardeningReport(role, database, [sig for _, sig in functions], members, settings)


def _add_members(conn: psycopg.Connection[Any], reader: str) -> list[str]:
    """Make every role but the reader (and what it inherits from) a member of BUILTINS_ROLE."""
    rows = conn.execute(
        "SELECT r.rolname FROM pg_roles r WHERE r.rolname !~ '^pg_' AND NOT r.rolsuper "
        "AND r.rolname NOT IN (%s, %s) AND NOT pg_has_role(%s, r.oid, 'USAGE') "
        "AND NOT pg_has_role(r.oid, %s, 'MEMBER') ORDER BY 1",
        (reader, BUILTINS_ROLE, reader, BUILTINS_ROLE),
    ).fetchall()
    members = [str(r[0]) for r in rows]
    for name in members:
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(BUILTINS_ROLE), sql.Identifier(name)))
    return members


def _plain(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix):]
    return url
