"""Narration stage: latency and how often the LLM's narrative passes the number check.

Takes the demo answers of a `rag-bot eval sql` results file that returned rows, runs each stored query
again on the demo database, and narrates the result with the real LLM exactly as the chat does
(`narrate_result`: one regeneration, then the table-only sentence). Nothing else is asked of the LLM.

    RAG_BOT_LLM_BASE_URL=http://127.0.0.1:8001/v1 uv run --no-sync python bench/narration.py \\
        bench/results/sql_eval_40.json            # -> bench/results/narration.json and .md
    uv run --no-sync python bench/narration.py --pairs bench/results/narration.json NAME
        # no LLM: the entity-number check on stored narratives -> bench/results/NAME.json and .md

Misattributed numbers (`misattributed_numbers`): a figure stated next to a row's label that is not a
value of that row ("Delivery and billing each have 553"), over all figures the narratives state.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rag_bot.analytics.narration import _figures, misattributed_numbers, narrate_result, numbers_supported
from rag_bot.config import get_settings
from rag_bot.db import admin_url, with_database
from rag_bot.demo.load import load_demo_database
from rag_bot.evaluation.common import format_table, percentile
from rag_bot.evaluation.sql import load_jsonl, run_gold
from rag_bot.llm.base import ChatMessage, Completion
from rag_bot.llm.openai_compat import OpenAICompatClient
from rag_bot.stack.postgres import running_postgres

RESULTS = Path("bench/results")


class _Recording:
    """The LLM client, keeping every draft (one draft = the first narrative passed, two = regenerated)."""

    def __init__(self, llm: OpenAICompatClient) -> None:
        self.llm, self.texts = llm, []

    def complete(self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None) -> Completion:
        reply = self.llm.complete(messages, max_tokens=max_tokens)
        self.texts.append(reply.text)
        return reply


def run(path: Path) -> dict[str, Any]:
    settings = get_settings()
    payload = json.loads(path.read_text(encoding="utf-8"))
    items = {i.id: i for i in load_jsonl(Path("knowledge_base/eval/sql_qa.jsonl"))}
    answers = [r for r in payload["items"]["rag_bot"] if r["database"] == "demo" and r["status"] == "ok" and r["sql"]]
    llm = OpenAICompatClient(settings.llm_base_url, settings.llm_model, temperature=0.0, max_tokens=400,
                             timeout_s=600)
    rows_out = []
    with running_postgres(settings):
        admin = admin_url(settings)
        demo = with_database(admin, load_demo_database(admin).db_name)
        for answer in answers:
            item = items[answer["id"]]
            columns, rows = run_gold(demo, answer["sql"])
            if not rows:
                continue  # an empty result is said without the LLM
            recording = _Recording(llm)
            t0 = time.perf_counter()
            text, checked = narrate_result(item.question, columns, rows[:1000], llm=recording, language=item.language)
            rows_out.append({
                "id": item.id, "language": item.language, "correct_sql": answer["correct"], "rows": len(rows),
                "seconds": round(time.perf_counter() - t0, 2), "llm_calls": len(recording.texts), "checked": checked,
                "text": text, "rejected": [t for t in recording.texts if numbers_supported(t, rows, item.question)],
                "figures": len(_figures(text)),
                "misattributed": misattributed_numbers(text, columns, rows, item.question),
                "drafts_misattributed": [misattributed_numbers(t, columns, rows, item.question)
                                         for t in recording.texts],
            })
            sys.stderr.write(f"{item.id}: {rows_out[-1]['seconds']} s, checked={checked}\n")
    return {"source": str(path), "model": settings.llm_model, "items": rows_out}


def pairs(path: Path) -> dict[str, Any]:
    """The entity-number check on the narratives stored in a narration.json (their queries re-run)."""
    settings = get_settings()
    stored = json.loads(path.read_text(encoding="utf-8"))
    payload = json.loads(Path(stored["source"]).read_text(encoding="utf-8"))
    sql = {r["id"]: r["sql"] for r in payload["items"]["rag_bot"] if r["database"] == "demo"}
    items = {i.id: i for i in load_jsonl(Path("knowledge_base/eval/sql_qa.jsonl"))}
    out = []
    with running_postgres(settings):
        admin = admin_url(settings)
        demo = with_database(admin, load_demo_database(admin).db_name)
        for entry in stored["items"]:
            columns, rows = run_gold(demo, sql[entry["id"]])
            question = items[entry["id"]].question
            out.append({"id": entry["id"], "text": entry["text"], "figures": len(_figures(entry["text"])),
                        "misattributed": misattributed_numbers(entry["text"], columns, rows[:1000], question)})
    return {"source": str(path), "model": stored["model"], "items": out}


def pairs_report(result: dict[str, Any]) -> str:
    items = result["items"]
    figures = sum(i["figures"] for i in items)
    wrong = sum(len(i["misattributed"]) for i in items)
    table = format_table(["narratives", "figures stated", "misattributed figures", "rate", "narratives with one"],
                         [[len(items), figures, wrong, f"{wrong / max(figures, 1):.1%}",
                           sum(bool(i["misattributed"]) for i in items)]])
    flagged = "\n".join(f"- {i['id']}: {', '.join(i['misattributed'])} in: {i['text']!r}"
                         for i in items if i["misattributed"])
    return f"# Entity-number pairs in the narratives of {result['source']}\n\n{table}\n\n{flagged}\n"


def report(result: dict[str, Any]) -> str:
    items = result["items"]
    seconds = [i["seconds"] for i in items]
    passed_first = sum(i["checked"] and i["llm_calls"] == 1 for i in items)
    passed_second = sum(i["checked"] and i["llm_calls"] == 2 for i in items)
    # A draft with a stray figure that still passed lost the sentences holding it.
    trimmed = sum(i["checked"] and len(i["rejected"]) >= i["llm_calls"] for i in items)
    table = format_table(["narratives", "passed first time", "passed after one regeneration",
                          "of these, sentences dropped", "table-only fallback", "p50 s", "p95 s"],
                         [[len(items), passed_first, passed_second, trimmed,
                           len(items) - passed_first - passed_second,
                           round(percentile(seconds, 50), 1), round(percentile(seconds, 95), 1)]])
    text = (f"# Narration ({result['model']}, demo answers of {result['source']})\n\n{table}\n\n"
            "Each item's text, LLM calls and rejected drafts are in narration.json.\n")
    if all("misattributed" in i for i in items):
        drafts = [d for i in items for d in i["drafts_misattributed"][:1]]
        text += ("\nEntity-number check: " + pairs_report(result).split("\n\n", 1)[1]
                 + f"\nFirst drafts with a misattributed figure (caught and dropped or regenerated): "
                 f"{sum(bool(d) for d in drafts)} of {len(drafts)}.\n")
    return text


if __name__ == "__main__":
    if sys.argv[1:2] == ["--report"]:  # re-render the table from narration.json, no LLM
        sys.stdout.write(report(json.loads(RESULTS.joinpath("narration.json").read_text(encoding="utf-8"))))
        sys.exit(0)
    if sys.argv[1:2] == ["--pairs"]:
        checked = pairs(Path(sys.argv[2]))
        RESULTS.joinpath(f"{sys.argv[3]}.json").write_text(json.dumps(checked, ensure_ascii=False, indent=1),
                                                           encoding="utf-8")
        RESULTS.joinpath(f"{sys.argv[3]}.md").write_text(pairs_report(checked), encoding="utf-8")
        sys.stdout.write(pairs_report(checked))
        sys.exit(0)
    result = run(Path(sys.argv[1]))
    RESULTS.joinpath("narration.json").write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
    table = report(result)
    RESULTS.joinpath("narration.md").write_text(table, encoding="utf-8")
    sys.stdout.write(table)
