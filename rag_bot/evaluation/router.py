"""`rag-bot eval router`: intent and domain accuracy, confusion matrix, slow-path share and latency.

Input: JSONL with `message`, `intent`, `domain` (null for smalltalk/out_of_scope), optional
`language`. A domain counts as right when the router's first domain is the gold one.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from rag_bot.assistant.routing import Router
from rag_bot.config import Settings, get_settings
from rag_bot.evaluation.common import (
    RESULTS_DIR,
    CachedEmbedder,
    build_eval_embedder,
    format_table,
    percentile,
    read_jsonl,
    write_json,
)
from rag_bot.llm.base import LLMClient
from rag_bot.profiles import DEFAULT_PROFILES_FILE, INTENTS, load_profiles

logger = logging.getLogger(__name__)


def load_router_items(path: Path) -> list[dict[str, Any]]:
    items = read_jsonl(path)
    for number, item in enumerate(items, 1):
        if "message" not in item or "intent" not in item:
            raise click.ClickException(f"{path}:{number}: each line needs 'message' and 'intent'.")
    return items


def evaluate_router(router: Router, items: list[dict[str, Any]], *, progress: bool = True) -> dict[str, Any]:
    """Route every item once; returns metrics plus one record per item."""
    records = []
    for item in tqdm(items, desc="router", unit="msg", disable=not progress):
        route = router.classify(item["message"])
        gold_domain = item.get("domain")
        records.append(
            {
                "id": item.get("id"),
                "message": item["message"],
                "language": item.get("language", route.language),
                "gold_intent": item["intent"],
                "intent": route.intent,
                "gold_domain": gold_domain,
                "domains": list(route.domains),
                "intent_ok": route.intent == item["intent"],
                "domain_ok": (route.domains[:1] == (gold_domain,)) if gold_domain else None,
                # With on_ambiguous_domain=search_both, retrieval also covers the second domain.
                "domain_in_routed": (gold_domain in route.domains) if gold_domain else None,
                "path": route.path,
                "intent_confidence": round(route.intent_confidence, 4),
                "domain_confidence": round(route.domain_confidence, 4),
                "latency_ms": round(route.latency_s * 1000, 2),
            }
        )
    return {"metrics": router_metrics(records), "items": records}


def router_metrics(records: list[dict[str, Any]]) -> dict[str, Any]:
    with_domain = [r for r in records if r["gold_domain"]]
    slow = [r for r in records if r["path"] == "slow"]
    fast = [r for r in records if r["path"] != "slow"]
    confusion: dict[str, Counter[str]] = defaultdict(Counter)
    for r in records:
        confusion[r["gold_intent"]][r["intent"]] += 1
    by_language: dict[str, dict[str, float]] = {}
    for language in sorted({r["language"] for r in records}):
        subset = [r for r in records if r["language"] == language]
        dom = [r for r in subset if r["gold_domain"]]
        by_language[language] = {
            "n": len(subset),
            "intent_accuracy": sum(r["intent_ok"] for r in subset) / len(subset),
            "domain_accuracy": sum(r["domain_ok"] for r in dom) / len(dom) if dom else float("nan"),
        }
    return {
        "n": len(records),
        "intent_accuracy": sum(r["intent_ok"] for r in records) / len(records),
        "domain_accuracy": sum(r["domain_ok"] for r in with_domain) / len(with_domain) if with_domain else None,
        "domain_in_routed_share": (
            sum(r["domain_in_routed"] for r in with_domain) / len(with_domain) if with_domain else None
        ),
        "slow_path_share": len(slow) / len(records),
        "latency_ms": {
            "all_p50": percentile([r["latency_ms"] for r in records], 50),
            "all_p95": percentile([r["latency_ms"] for r in records], 95),
            "fast_p50": percentile([r["latency_ms"] for r in fast], 50),
            "slow_p50": percentile([r["latency_ms"] for r in slow], 50),
            "slow_p95": percentile([r["latency_ms"] for r in slow], 95),
        },
        "by_language": by_language,
        "confusion": {gold: dict(pred) for gold, pred in sorted(confusion.items())},
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _llm_for_eval(settings: Settings, mode: str) -> Iterator[tuple[LLMClient | None, str]]:
    """mode "none": fast path only; "url": the configured server; "start": a private llama.cpp server."""
    if mode == "none":
        yield None, "none (fast path only)"
        return
    from rag_bot.llm.openai_compat import OpenAICompatClient

    if mode == "url":
        yield (
            OpenAICompatClient(settings.llm_base_url, settings.llm_model, timeout_s=settings.llm_timeout_s),
            f"{settings.llm_model} at {settings.llm_base_url}",
        )
        return
    from rag_bot.stack.llm_server import LLMServer, ensure_model_for_engine

    model = ensure_model_for_engine("llamacpp", settings.llm_weights, settings.models_dir, None)
    server = LLMServer(
        "llamacpp",
        model,
        settings.llm_weights,
        port=_free_port(),
        context=2048,
        threads=settings.llm_threads,
        log_path=settings.logs_dir / "eval_router_llamacpp.log",
    )
    server.start(timeout_s=settings.llm_start_timeout_s)
    try:
        yield OpenAICompatClient(server.base_url, settings.llm_weights), f"{settings.llm_weights} (llama.cpp, private)"
    finally:
        server.stop()


@click.command("router")
@click.option(
    "--jsonl",
    "jsonl",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Router eval set (message, intent, domain).",
)
@click.option("--profile", default="analyst", show_default=True, help="Bot profile whose domains are routed.")
@click.option(
    "--profiles-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=DEFAULT_PROFILES_FILE,
    show_default=True,
)
@click.option(
    "--llm",
    "llm_mode",
    type=click.Choice(["start", "url", "none"]),
    default="start",
    show_default=True,
    help="Slow path: start a private llama.cpp server, use RAG_BOT_LLM_BASE_URL, or none.",
)
@click.option(
    "--embedder",
    "embedder_choice",
    type=click.Choice(["auto", "fast", "configured"]),
    default="auto",
    show_default=True,
    help="auto: FastE5 when it loads, else the configured embedder.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=RESULTS_DIR / "eval_router.json",
    show_default=True,
)
def router(jsonl: Path, profile: str, profiles_file: Path, llm_mode: str, embedder_choice: str, out: Path) -> None:
    """Intent and domain accuracy of the router, its confusion matrix, slow-path share and latency."""
    settings = get_settings()
    config = load_profiles(profiles_file)
    inner, label = build_eval_embedder(settings, embedder_choice)
    embedder = CachedEmbedder(inner, settings.state_dir / "eval_cache" / "router_embeddings.npz")
    items = load_router_items(jsonl)
    with _llm_for_eval(settings, llm_mode) as (llm, llm_label):
        started = time.perf_counter()
        bot = Router(config, config.profile(profile), embedder, llm=llm)
        build_s = time.perf_counter() - started
        result = evaluate_router(bot, items)
    embedder.save()
    metrics = result["metrics"]
    payload = {
        "kind": "router",
        "set": str(jsonl),
        "profile": profile,
        "embedder": label,
        "llm": llm_label,
        "router_build_s": round(build_s, 2),
        **result,
    }
    write_json(out, payload)
    click.echo(f"embedder: {label}; slow path: {llm_label}; {metrics['n']} messages")
    lat = metrics["latency_ms"]
    click.echo(
        format_table(
            ["intent acc", "domain acc", "gold in routed", "slow share", "p50 ms", "p95 ms", "fast p50", "slow p50"],
            [
                [
                    metrics["intent_accuracy"],
                    metrics["domain_accuracy"],
                    metrics["domain_in_routed_share"],
                    metrics["slow_path_share"],
                    lat["all_p50"],
                    lat["all_p95"],
                    lat["fast_p50"],
                    lat["slow_p50"],
                ]
            ],
        )
    )
    labels = [i for i in INTENTS if i in metrics["confusion"] or any(i in p for p in metrics["confusion"].values())]
    click.echo("confusion (rows: gold, columns: predicted)")
    click.echo(
        format_table(
            ["gold \\ pred", *labels],
            [[g, *(metrics["confusion"].get(g, {}).get(p, 0) for p in labels)] for g in labels],
        )
    )
    click.echo(f"wrote {out}")
