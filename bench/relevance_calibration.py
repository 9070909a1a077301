"""Calibrate `router.min_relevance` on the TUNING parts only: the best document similarity of in-scope
docs questions (router.jsonl docs + docs_qa.jsonl) against out-of-scope messages.

    .venv/bin/python bench/relevance_calibration.py [--split tuning]

Prints, per candidate threshold, the share of out-of-scope messages below it (would be refused if
routed to docs) and the share of in-scope docs questions below it (false refusals); writes
bench/results/relevance_calibration.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rag_bot.config import get_settings  # noqa: E402
from rag_bot.evaluation.common import CachedEmbedder, build_eval_embedder, read_jsonl, select_split  # noqa: E402
from rag_bot.evaluation.docs import fresh_store, ingest_knowledge_base  # noqa: E402
from rag_bot.profiles import load_profiles  # noqa: E402
from rag_bot.wiring import document_relevance  # noqa: E402

EVAL = ROOT / "knowledge_base" / "eval"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="tuning", choices=["tuning", "report", "all"])
    parser.add_argument("--profile", default="analyst")
    args = parser.parse_args()
    settings = get_settings()
    profile = load_profiles(ROOT / "profiles.yaml").profile(args.profile)
    inner, _ = build_eval_embedder(settings)
    embedder = CachedEmbedder(inner, settings.state_dir / "eval_cache" / "router_embeddings.npz")
    router = select_split(read_jsonl(EVAL / "router.jsonl"), EVAL / "router.jsonl", args.split)
    docs_qa = select_split(read_jsonl(EVAL / "docs_qa.jsonl"), EVAL / "docs_qa.jsonl", args.split)
    in_scope = [r["message"] for r in router if r["intent"] == "docs"]
    in_scope += [q["question"] for q in docs_qa if q.get("expected") != "refuse"]
    out_scope = [r["message"] for r in router if r["intent"] == "out_of_scope"]
    with fresh_store(settings, embedder) as store:
        ingest_knowledge_base(store, embedder, ROOT / "knowledge_base" / "docs")
        relevance = document_relevance(store, profile)
        inside = sorted(relevance(v) for v in embedder.embed_queries(in_scope))
        outside = sorted(relevance(v) for v in embedder.embed_queries(out_scope))
    embedder.save()
    lines = [
        f"# Relevance calibration ({args.split} part, profile {args.profile})",
        "",
        f"{len(in_scope)} in-scope docs questions, {len(outside)} out-of-scope messages; nearest document cosine.",
        "",
        "| threshold | out of scope below (caught) | in scope below (false refusals) |",
        "|---|---|---|",
    ]
    for t in [0.80 + i * 0.005 for i in range(11)]:
        caught = sum(x < t for x in outside) / len(outside)
        refused = sum(x < t for x in inside) / len(inside)
        lines.append(f"| {t:.3f} | {caught:.3f} | {refused:.3f} |")
    lines += ["", f"in-scope lowest five: {[round(x, 3) for x in inside[:5]]}",
              f"out-of-scope highest five: {[round(x, 3) for x in outside[-5:]]}"]
    out = ROOT / "bench" / "results" / f"relevance_calibration_{args.split}.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))  # noqa: T201 - a script's output


if __name__ == "__main__":
    main()
