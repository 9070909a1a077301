"""Re-score the demo rows of a `rag-bot eval sql` results file against the current gold SQL.

When a gold query in knowledge_base/eval/sql_qa.jsonl changes (e.g. a second acceptable variant), the
stored predictions are run again on the demo database and scored by the same rules; nothing is asked of
the LLM. Every changed verdict is printed.

    uv run --no-sync python bench/sql_rescore.py bench/results/sql_eval_40.json
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import psycopg

from rag_bot.config import get_settings
from rag_bot.db import admin_url, with_database
from rag_bot.demo.load import load_demo_database
from rag_bot.evaluation.sql import ItemResult, load_jsonl, run_gold, score, summarise
from rag_bot.stack.postgres import running_postgres

JSONL = Path("knowledge_base/eval/sql_qa.jsonl")


def rescore(path: Path) -> list[str]:
    """Rewrite `path` with demo verdicts under the current gold; returns one line per changed verdict."""
    payload = json.loads(path.read_text(encoding="utf-8"))
    gold = {item.id: item for item in load_jsonl(JSONL)}
    settings = get_settings()
    changes: list[str] = []
    with running_postgres(settings):
        admin = admin_url(settings)
        demo_admin = with_database(admin, load_demo_database(admin).db_name)
        for system, rows in payload["items"].items():
            results = [ItemResult(**r) for r in rows]
            for index, result in enumerate(results):
                item = gold.get(result.id)
                if result.database != "demo" or item is None or result.status != "ok" or not result.sql:
                    continue
                try:
                    _, predicted = run_gold(demo_admin, result.sql)
                except psycopg.Error as exc:  # it ran during the eval; say so if it no longer does
                    changes.append(f"{system} {result.id}: prediction no longer runs ({exc})")
                    continue
                correct, _ = score(item, "ok", predicted, demo_admin)
                if correct != result.correct:
                    changes.append(f"{system} {result.id}: {result.correct} -> {correct}")
                results[index] = replace(result, correct=correct, gold=item.gold)
            payload["items"][system] = [r.__dict__ for r in results]
            payload["summaries"][system] = summarise(results)
    path.write_text(json.dumps(payload, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
    return changes


if __name__ == "__main__":
    sys.stdout.write("\n".join(rescore(Path(sys.argv[1])) or ["no verdict changed"]) + "\n")
