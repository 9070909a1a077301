"""sql-eval's scoring rules, apart from the command: gold variants, result matching, one prediction's score.

A cell may hold several gold queries separated by `;`; `{a, b}` lists alternative output columns (any
non-empty combination is acceptable); the prediction may return extra columns (subset match); row
order matters only when the gold query has ORDER BY.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import psycopg

from rag_bot.evaluation.common import percentile

if TYPE_CHECKING:
    from rag_bot.evaluation.sql_items import EvalItem

logger = logging.getLogger(__name__)


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



def run_gold(admin_db_url: str, query: str, timeout_ms: int = 20000) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run a gold query as the admin (gold SQL is trusted text from the eval file), never committing."""
    with psycopg.connect(admin_db_url) as conn:
        conn.execute(f"SET statement_timeout = {int(timeout_ms)}")
        cur = conn.execute(query.replace("%", "%%"), ())
        rows = [tuple(r) for r in cur.fetchall()] if cur.description else []
        cols = [d.name for d in cur.description or []]
        conn.rollback()
    return cols, rows


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
    language: str = "en"
    repairs: list[str] = field(default_factory=list)  # deterministic identifier fixes applied


def score(
    item: EvalItem, status: str, rows: list[tuple[Any, ...]] | None, admin_db_url: str
) -> tuple[bool, str | None]:
    """Correct when the prediction's rows match any gold variant; unanswerable items want a clarification."""
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


def summarise(results: Sequence[ItemResult]) -> dict[str, Any]:
    """Accuracy, fails-to-run (error + rejected), false "not there" (clarify on answerable), latency percentiles;
    overall and per category, database and language, plus per-stage latency percentiles."""
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
        out["p50_seconds"] = round(percentile([r.seconds for r in rs], 50), 2)
        out["p95_seconds"] = round(percentile([r.seconds for r in rs], 95), 2)
        return out

    def groups(key: str) -> dict[str, dict[str, Any]]:
        by: dict[str, list[ItemResult]] = defaultdict(list)
        for r in results:
            by[getattr(r, key)].append(r)
        return {k: block(rs) for k, rs in sorted(by.items())}

    stages = sorted({k for r in results for k in r.timings})
    return {
        "overall": block(results),
        "per_category": groups("category"),
        "per_database": groups("database"),
        "per_language": groups("language"),
        "stage_p50_seconds": {k: round(percentile([r.timings[k] for r in results if k in r.timings], 50), 3)
                              for k in stages},
        "stage_p95_seconds": {k: round(percentile([r.timings[k] for r in results if k in r.timings], 95), 3)
                              for k in stages},
    }


def render_table(summaries: dict[str, dict[str, Any]]) -> str:
    systems = list(summaries)
    cats = sorted({c for s in summaries.values() for c in s["per_category"]})
    header = f"{'category':<18}" + "".join(f"{name:>26}" for name in systems)
    lines = [header, "-" * len(header), "(accuracy, fail = did not run, nt = told 'not there'/clarify on answerable)"]

    def cell(b: dict[str, Any] | None) -> str:
        if not b:
            return f"{'-':>26}"
        if "accuracy" in b:
            failed = b["error_rate"] + b["rejection_rate"]
            text = f"{b['accuracy']:.0%} fail {failed:.0%} nt {b['false_clarify_rate']:.0%} n={b['n_answerable']}"
        else:
            text = f"idk {b['idk_accuracy']:.0%} n={b['n_idk']}"
        return f"{text:>26}"

    for cat in cats:
        lines.append(f"{cat:<18}" + "".join(cell(summaries[s]["per_category"].get(cat)) for s in systems))
    lines.append("-" * len(header))
    for group in ("per_database", "per_language"):
        keys = sorted({k for s in summaries.values() for k in s.get(group, {})})
        for key in keys if len(keys) > 1 else []:
            lines.append(f"{key:<18}" + "".join(cell(summaries[s].get(group, {}).get(key)) for s in systems))
    lines.append("-" * len(header))
    lines.append(f"{'overall':<18}" + "".join(cell(summaries[s]["overall"]) for s in systems))
    for s in systems:
        o = summaries[s]["overall"]
        lines.append(f"{s}: " + ", ".join(f"{k}={v}" for k, v in o.items()))
    return "\n".join(lines)
