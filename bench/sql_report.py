"""Tables from a `rag-bot eval sql` results file: accuracy per set and category for each system, the
retry share, and the latency split per stage (schema retrieval, generation, guard, execution).

    uv run --no-sync python bench/sql_report.py bench/results/sql_eval.json   # -> bench/results/sql_eval.md
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from rag_bot.evaluation.common import format_table, percentile

STAGES = ("retrieve", "generate", "repair", "guard", "execute", "narrate", "total")


def _set_of(item: dict[str, Any]) -> str:
    if item["database"] == "demo":
        return "demo (sql_qa.jsonl)"
    return "Defog idk" if item["gold"] is None else "Defog dev"


def _accuracy(items: list[dict[str, Any]]) -> str:
    if not items:
        return "-"
    return f"{sum(i['correct'] for i in items) / len(items):.1%} ({sum(i['correct'] for i in items)}/{len(items)})"


def report(payload: dict[str, Any]) -> str:
    systems: dict[str, list[dict[str, Any]]] = {k: v for k, v in payload["items"].items() if v}
    ours = systems.get("rag_bot") or next(iter(systems.values()))
    done = len(ours)
    title = f"{payload['n_items']} questions" if done >= payload["n_items"] else (
        f"PARTIAL: {done} of {payload['n_items']} questions done, the run was stopped")
    lines = [f"# SQL evaluation ({title})", "",
             "Options: `" + json.dumps(payload["options"]) + "`", ""]

    sets = sorted({_set_of(i) for i in ours})
    rows = []
    for name in sets:
        row: list[Any] = [name]
        for items in systems.values():
            row.append(_accuracy([i for i in items if _set_of(i) == name]))
        rows.append(row)
    lines += ["## Execution accuracy (idk: share answered with a clarification)", "",
              format_table(["set", *systems], rows), ""]

    rows = []
    for system, items in systems.items():
        answerable = [i for i in items if i["gold"] is not None]
        n = max(len(answerable), 1)
        seconds = [float(i["seconds"]) for i in items]
        rows.append([system, _accuracy(answerable),
                     f"{sum(i['status'] in ('error', 'rejected') for i in answerable) / n:.1%}",
                     f"{sum(i['status'] == 'clarify' for i in answerable) / n:.1%}",
                     f"{percentile(seconds, 50):.1f}", f"{percentile(seconds, 95):.1f}"])
    lines += ["## Answerable questions: accuracy, fails to run, told \"not there\" (clarify), latency", "",
              format_table(["system", "accuracy", "fails to run", "false not there", "p50 s", "p95 s"], rows), ""]

    by_cat: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for system, items in systems.items():
        for item in items:
            by_cat[(_set_of(item), item["category"])][system].append(item)
    rows = [[s, c, *[_accuracy(by_cat[(s, c)][system]) for system in systems]] for s, c in sorted(by_cat)]
    lines += ["## Per category", "", format_table(["set", "category", *systems], rows), ""]

    answerable = [i for i in ours if i["gold"] is not None]
    retried = [i for i in answerable if i["retries"] > 0]
    rescued = [i for i in retried if i["correct"]]
    statuses: dict[str, int] = defaultdict(int)
    for item in ours:
        statuses[item["status"]] += 1
    lines += ["## Retries and outcomes (rag_bot)", "",
              f"- answerable questions that needed a retry: {len(retried)}/{len(answerable)}"
              f" ({len(retried) / max(len(answerable), 1):.0%}); correct after the retry: {len(rescued)}",
              f"- final statuses: {dict(sorted(statuses.items()))}",
              f"- guard rejections of the model's SQL: {sum(i['status'] == 'rejected' for i in ours)}",
              f"- questions whose SQL the identifier repair changed: {sum(bool(i.get('repairs')) for i in ours)}"
              f" (correct: {sum(bool(i.get('repairs')) and i['correct'] for i in ours)})", ""]

    rows = []
    for stage in STAGES:
        values = [float(i["timings"][stage]) for i in ours if stage in i.get("timings", {})]
        if values:
            rows.append([stage, len(values), f"{percentile(values, 50):.3f}", f"{percentile(values, 95):.3f}"])
    lines += ["## Latency per stage (rag_bot, seconds)", "", format_table(["stage", "n", "p50", "p95"], rows), ""]
    return "\n".join(lines)


def main() -> None:
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/sql_eval.json")
    text = report(json.loads(source.read_text(encoding="utf-8")))
    target = source.with_suffix(".md")
    target.write_text(text + "\n", encoding="utf-8")
    sys.stdout.write(f"{text}\nwrote {target}\n")


if __name__ == "__main__":
    main()
