"""Which wall stops each class of SQL attack: the guard, the database role, or nothing (issue 18).

Starts a throwaway embedded PostgreSQL, loads the demo company with its read-only role, then for every
hostile query asks the guard (`validate_sql`) and, separately, the database (the runner's
`run_unguarded`, as the reader, guard bypassed). Also measures the bot process's peak-RSS growth on a
100 MB cell and whether a session advisory lock outlives the query. Writes a markdown table.

    .venv/bin/python bench/sql_walls.py --label after
    PYTHONPATH=/path/to/old/checkout .venv/bin/python bench/sql_walls.py --label before

It imports only APIs that existed before issue 18, so the same file measures the old code.
"""

# ruff: noqa: E501  (SQL literals)

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg

from rag_bot.analytics.sql_guard import validate_sql
from rag_bot.analytics.sql_runner import PostgresSqlRunner, SqlExecutionError
from rag_bot.db import with_database
from rag_bot.demo.load import load_demo_database
from rag_bot.errors import DatabaseUnavailable, SQLRejected
from rag_bot.stack.postgres import start_embedded, stop_embedded

ATTACKS: dict[str, list[str]] = {
    "SQL run from a string (ts_stat, ts_rewrite)": [
        "SELECT word FROM ts_stat('SELECT to_tsvector(''simple'', rolname) FROM pg_roles')",
        "SELECT word FROM ts_stat('SELECT to_tsvector(''simple'', name || '' '' || setting) FROM pg_settings')",
        "SELECT * FROM ts_stat('SELECT to_tsvector(pg_sleep(1)::text)')",
        "SELECT ts_rewrite('a'::tsquery, 'SELECT ''a''::tsquery, ''b''::tsquery')",
    ],
    "SQL run from a string (*_to_xml*)": [
        "SELECT query_to_xml('SELECT rolname FROM pg_roles', true, true, '')",
        "SELECT query_to_xml_and_xmlschema('SELECT * FROM pg_settings', true, true, '')",
        "SELECT schema_to_xml_and_xmlschema('pg_catalog', true, true, '')",
        "SELECT database_to_xml_and_xmlschema(true, true, '')",
        "SELECT database_to_xml(true, true, '')",
        "SELECT table_to_xml('pg_roles', true, true, '')",
        "SELECT cursor_to_xml('c', 1, true, true, '')",
    ],
    "sleep": ["SELECT pg_sleep(30)", "SELECT pg_sleep_for('30 seconds')", "SELECT pg_sleep_until(now() + interval '30 seconds')"],
    "advisory locks": ["SELECT pg_advisory_lock(42)", "SELECT pg_try_advisory_lock(42)", "SELECT pg_advisory_xact_lock(42)",
                       "SELECT pg_advisory_lock_shared(42)"],
    "large objects": ["SELECT lo_get(1)", "SELECT lo_from_bytea(0, 'x')", "SELECT lo_creat(-1)", "SELECT lo_import('/etc/passwd')"],
    "server files": ["SELECT pg_read_file('/etc/passwd')", "SELECT pg_ls_dir('.')", "SELECT pg_stat_file('PG_VERSION')",
                     "SELECT pg_read_binary_file('PG_VERSION')"],
    "other sessions": ["SELECT pg_cancel_backend(pg_backend_pid())", "SELECT pg_terminate_backend(pg_backend_pid())"],
    "settings and server info": ["SELECT current_setting('data_directory')", "SELECT set_config('search_path', 'x', false)",
                                 "SELECT version()", "SELECT inet_server_addr()", "SELECT current_user"],
    "catalog tables": ["SELECT rolname FROM pg_roles", "SELECT name, setting FROM pg_settings",
                       "SELECT * FROM information_schema.role_table_grants", "SELECT rolpassword FROM pg_authid"],
    "catalog lookups by cast or function": ["SELECT 'pg_authid'::regclass::oid", "SELECT has_table_privilege('orders', 'DELETE')",
                                            "SELECT pg_get_functiondef('ts_stat(text)'::regprocedure)"],
    "schema-qualified functions": ["SELECT pg_catalog.pg_sleep(1)", "SELECT pg_catalog.lower('X')"],
    "writes, DDL, COPY": ["DELETE FROM orders", "DROP TABLE payments", "COPY customers TO '/tmp/leak.csv'",
                          "WITH d AS (DELETE FROM orders RETURNING 1) SELECT count(*) FROM d", "SELECT nextval('orders_order_id_seq')"],
    "stacked statements": ["SELECT 1; DELETE FROM orders"],
    "unbounded generate_series": ["SELECT count(*) FROM generate_series(1, 10000000000)",
                                  "SELECT count(*) FROM generate_series(1, (SELECT max(order_id) * 100000000 FROM orders))"],
    "oversized cells and results": ["SELECT repeat('x', 100000000)", "SELECT lpad('x', 100000000, 'x')",
                                    "SELECT o.*, lpad('x', 4000, 'x') AS pad FROM orders o"],
}

_RSS_PROBE = """
import json, sys
from rag_bot.analytics.sql_runner import PostgresSqlRunner
def peak_kb():  # VmHWM: this image's peak RSS (ru_maxrss would include the parent's, inherited at fork)
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1])
with PostgresSqlRunner(sys.argv[1], statement_timeout_ms=20000) as runner:
    runner.run_unguarded("SELECT 1")
    before = peak_kb()
    result = runner.run_unguarded(sys.argv[2])
    after = peak_kb()
print(json.dumps({"growth_mb": round((after - before) / 1024, 1), "before_mb": round(before / 1024, 1), "cell_bytes": len(result.rows[0][0])}))
"""


def _guard(sql: str) -> str:
    try:
        validate_sql(sql)
    except SQLRejected as exc:
        return f"refused ({getattr(exc, 'rule', '?')})"
    return "passed"


def _database(runner: PostgresSqlRunner, sql: str) -> str:
    try:
        result = runner.run_unguarded(sql)
    except DatabaseUnavailable:
        return "ran (the connection was killed)"
    except SqlExecutionError as exc:
        return {"permission": "refused (permission)", "read_only": "refused (read only)",
                "timeout": "ran until the timeout", "too_large": "refused (too large)"}.get(exc.kind, f"refused ({exc.kind})")
    cell = result.rows[0][0] if result.rows and result.rows[0] else None
    if isinstance(cell, str) and len(cell) > 10_000:
        return f"ran ({len(cell) / 1e6:.0f} MB cell)"
    if getattr(result, "cells_cut", 0):
        return f"ran, {result.cells_cut} cell(s) cut to {len(str(cell).encode()):,} bytes"
    return f"ran ({result.row_count} rows)"


def _lock_survives(runner: PostgresSqlRunner, admin_url: str, grant: bool) -> str:
    key = 4242
    with psycopg.connect(admin_url, autocommit=True) as admin:
        if grant:
            admin.execute("GRANT EXECUTE ON FUNCTION pg_advisory_lock(bigint) TO rag_bot_reader")
        try:
            outcome = _database(runner, f"SELECT pg_advisory_lock({key})")
            runner.run_unguarded("SELECT 1")  # back in the pool, used again
            row = admin.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s", (key,)).fetchone()
        finally:
            if grant:
                admin.execute("REVOKE EXECUTE ON FUNCTION pg_advisory_lock(bigint) FROM rag_bot_reader")
    held = bool(row and row[0])
    return f"{outcome}; lock {'SURVIVES' if held else 'released'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="sql_walls_")) / "pg"
    lines: list[str] = []
    try:
        admin = start_embedded(data_dir)
        demo = load_demo_database(admin)
        admin_url = with_database(admin, demo.db_name)
        with PostgresSqlRunner(demo.readonly_url, statement_timeout_ms=5000, pool_size=1) as runner:
            lines += [f"## SQL walls: {args.label}", "", "| attack class | query | guard | database (guard bypassed) |",
                      "|---|---|---|---|"]
            totals = {"guard": 0, "db": 0, "neither": 0, "n": 0}
            for klass, queries in ATTACKS.items():
                for sql in queries:
                    guard, db = _guard(sql), _database(runner, sql)
                    totals["n"] += 1
                    totals["guard"] += guard.startswith("refused")
                    totals["db"] += db.startswith("refused")
                    # a cell cut to the cap is contained, not a hole
                    totals["neither"] += not guard.startswith("refused") and not db.startswith("refused") and "cut" not in db
                    lines.append(f"| {klass} | `{sql[:70]}` | {guard} | {db} |")
            lines += ["", f"{totals['n']} queries: refused by the guard {totals['guard']}, by the database "
                      f"{totals['db']}, by neither {totals['neither']}.", ""]
            lines.append(f"- session advisory lock, as the reader: {_lock_survives(runner, admin_url, grant=False)}")
            lines.append(f"- session advisory lock, EXECUTE granted to the reader: {_lock_survives(runner, admin_url, grant=True)}")
        for sql in ("SELECT repeat('x', 100000000)",):
            # cwd: `python -c` puts the working directory first on sys.path, ahead of PYTHONPATH
            probe = subprocess.run([sys.executable, "-c", _RSS_PROBE, demo.readonly_url, sql], capture_output=True,
                                   text=True, timeout=300, check=True, cwd=data_dir.parent)
            measured = json.loads(probe.stdout.strip().splitlines()[-1])
            lines.append(f"- `{sql}` through the runner: peak RSS growth {measured['growth_mb']} MB (from {measured['before_mb']} MB), "
                         f"cell received {measured['cell_bytes']:,} characters")
    finally:
        stop_embedded(data_dir)
        shutil.rmtree(data_dir.parent, ignore_errors=True)
    text = "\n".join(lines) + "\n"
    output = args.output or Path("bench/results") / f"sql_walls_{args.label}.md"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
