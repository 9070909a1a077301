"""What llama.cpp's RAM prompt cache is worth: a data question after a docs question, cache off vs on.

    uv run python bench/prompt_cache.py --rounds 2

llama-cpp-python keeps the KV state of the last prompt only. A chat mixes data questions (a ~5k-token
system prompt: rules, the whole demo schema, the business definitions) with docs questions (another
prompt), so each data question after a docs question re-reads the schema. Each round starts a fresh
server (cache off or on, alternating: the VM drifts), then sends: data question A (fills the cache),
a docs question, data question B; the time of B is the number. The data prompt is the analytics
system prompt with knowledge_base/db/schema.sql and README.md as schema and definitions (the demo's
size and shape, without a database). Results: bench/results/prompt_cache.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import time
from datetime import date
from pathlib import Path
from typing import Any

from openai import OpenAI

from rag_bot.analytics.sql_generation import GATE, GATED_FORMAT, GATED_SCHEMA, SYSTEM, period_hints
from rag_bot.config import Settings
from rag_bot.stack.llm_server import LLMServer, ensure_model_for_engine

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
DATA_QUESTIONS = ["Revenue by region in 2024", "Сколько открытых обращений в поддержку по каналам?"]
DOCS = [
    {"role": "system", "content": "Answer from the context only.\nContext:\n"
     + (REPO / "knowledge_base/COMPANY.md").read_text(encoding="utf-8")[:6000]},
    {"role": "user", "content": "What does the company sell, in two sentences?"},
]


def _data_messages(question: str) -> list[dict[str, str]]:
    schema = (REPO / "knowledge_base/db/schema.sql").read_text(encoding="utf-8")
    notes = (REPO / "knowledge_base/db/README.md").read_text(encoding="utf-8")
    system = SYSTEM.format(periods=period_hints(date(2025, 12, 31)), gate=GATE, format=GATED_FORMAT,
                           schema=schema + "\n\nBusiness definitions:\n" + notes)
    return [{"role": "system", "content": system}, {"role": "user", "content": question}]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _timed(client: OpenAI, messages: list[dict[str, str]], max_tokens: int, json_schema: bool) -> dict[str, Any]:
    extra = {"response_format": {"type": "json_object", "schema": GATED_SCHEMA}} if json_schema else {}
    started = time.perf_counter()
    reply = client.chat.completions.create(model="bench", messages=messages, max_tokens=max_tokens,  # type: ignore[arg-type]
                                           temperature=0.0, **extra)  # type: ignore[arg-type]
    usage = reply.usage
    return {"s": round(time.perf_counter() - started, 2), "prompt_tokens": usage.prompt_tokens if usage else None}


def one_round(model: Path, cache_mb: int, log_dir: Path) -> dict[str, Any]:
    log = log_dir / f"llama_cache{cache_mb}.log"
    with LLMServer("llamacpp", model, "bench", port=_free_port(), context=8192, threads=2, log_path=log,
                   prompt_cache_mb=cache_mb) as server:
        client = OpenAI(base_url=server.base_url, api_key="x", timeout=1200)
        first = _timed(client, _data_messages(DATA_QUESTIONS[0]), 120, True)
        docs = _timed(client, DOCS, 60, False)
        second = _timed(client, _data_messages(DATA_QUESTIONS[1]), 120, True)
    return {"cache_mb": cache_mb, "data_a": first, "docs": docs, "data_b_after_docs": second}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="rounds per setting (alternated)")
    parser.add_argument("--cache-mb", type=int, default=Settings().llm_prompt_cache_mb)
    args = parser.parse_args()
    settings = Settings()
    model = ensure_model_for_engine("llamacpp", settings.llm_weights, settings.models_dir, None)
    log_dir = settings.logs_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    rounds = []
    for index in range(args.rounds * 2):
        cache_mb = 0 if index % 2 == 0 else args.cache_mb
        rounds.append(one_round(model, cache_mb, log_dir))
        print(json.dumps(rounds[-1]), flush=True)  # noqa: T201 - progress of a long bench
    off = [r["data_b_after_docs"]["s"] for r in rounds if r["cache_mb"] == 0]
    on = [r["data_b_after_docs"]["s"] for r in rounds if r["cache_mb"] > 0]
    summary = {"off_median_s": statistics.median(off), "on_median_s": statistics.median(on),
               "speedup": round(statistics.median(off) / statistics.median(on), 2),
               "prompt_tokens": rounds[0]["data_b_after_docs"]["prompt_tokens"], "rounds": rounds,
               "model": settings.llm_weights, "date": date.today().isoformat()}
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "prompt_cache.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    lines = [
        "# llama.cpp RAM prompt cache: a data question right after a docs question",
        "",
        f"Model {settings.llm_weights}, 2 threads, {len(off)} rounds per setting, alternated, fresh server each round "
        f"(`uv run python bench/prompt_cache.py --rounds {args.rounds}`, {summary['date']}).",
        f"Data prompt: {summary['prompt_tokens']} tokens (rules + demo schema + definitions).",
        "",
        "| cache | data question B after a docs question, median s | rounds (s) |",
        "|---|---|---|",
        f"| off (llama-cpp-python default: last prompt only) | {summary['off_median_s']} | {off} |",
        f"| on, {args.cache_mb} MB | {summary['on_median_s']} | {on} |",
        "",
        f"Speed-up: {summary['speedup']}x.",
    ]
    (RESULTS_DIR / "prompt_cache.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))  # noqa: T201


if __name__ == "__main__":
    main()
