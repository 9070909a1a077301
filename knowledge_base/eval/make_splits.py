"""Split an eval set into a tuning part and a fixed report part; writes `splits/<set>.json`.

Why: examples, thresholds and weights are tuned on the tuning part only and numbers are reported on
the report part, so a dev-set number cannot come from fitting the very messages it is measured on.
The split is stratified (every intent/domain/language group is halved) and deterministic (ids are
ordered by a hash of the id, not by the file's order, so nobody chooses which item lands where).
The committed files are the protocol; regenerate only for a new set, never to move items.

    python knowledge_base/eval/make_splits.py knowledge_base/eval/router.jsonl --by intent,domain,language
    python knowledge_base/eval/make_splits.py knowledge_base/eval/docs_qa.jsonl --by domain,language,expected
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import defaultdict
from pathlib import Path


def split_ids(items: list[dict[str, object]], by: list[str], report_share: float = 0.5) -> dict[str, list[str]]:
    """Stratified, hash-ordered split of item ids into tuning and report parts."""
    groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for item in items:
        groups[tuple(str(item.get(key)) for key in by)].append(str(item["id"]))
    tuning: list[str] = []
    report: list[str] = []
    carry = 0.0  # small groups alternate which part gets the odd item
    for key in sorted(groups):
        ids = sorted(groups[key], key=lambda i: hashlib.sha1(i.encode()).hexdigest())
        want = len(ids) * report_share + carry
        n_report = int(want)
        carry = want - n_report
        report += ids[:n_report]
        tuning += ids[n_report:]
    return {"tuning": sorted(tuning), "report": sorted(report)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jsonl", type=Path)
    parser.add_argument("--by", default="intent,domain,language", help="fields to stratify on")
    parser.add_argument("--report-share", type=float, default=0.5)
    args = parser.parse_args()
    items = [json.loads(line) for line in args.jsonl.read_text(encoding="utf-8").splitlines() if line.strip()]
    by = [f for f in args.by.split(",") if f]
    parts = split_ids(items, by, args.report_share)
    out = args.jsonl.parent / "splits" / f"{args.jsonl.stem}.json"
    out.parent.mkdir(exist_ok=True)
    payload = {"set": args.jsonl.name, "stratified_by": by, "method": "sha1(id) order within each group", **parts}
    out.write_text(json.dumps(payload, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{out}: {len(parts['tuning'])} tuning, {len(parts['report'])} report")  # noqa: T201 - a script's output


if __name__ == "__main__":
    main()
