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

from rag_bot.assistant.routing import Relevance, Router
from rag_bot.config import Settings, get_settings
from rag_bot.embeddings import Embedder
from rag_bot.evaluation.common import (
    RESULTS_DIR,
    SPLITS,
    CachedEmbedder,
    build_eval_embedder,
    format_table,
    percentile,
    read_jsonl,
    select_split,
    write_json,
)
from rag_bot.llm.base import LLMClient
from rag_bot.profiles import DEFAULT_PROFILES_FILE, INTENTS, Profile, ProfilesConfig, load_profiles

logger = logging.getLogger(__name__)


def load_router_items(path: Path) -> list[dict[str, Any]]:
    items = read_jsonl(path)
    for number, item in enumerate(items, 1):
        if "message" not in item or "intent" not in item:
            raise click.ClickException(f"{path}:{number}: each line needs 'message' and 'intent'.")
    return items


def evaluate_router(
    router: Router, items: list[dict[str, Any]], *, progress: bool = True, relevance: Relevance | None = None
) -> dict[str, Any]:
    """Route every item once; returns metrics plus one record per item (with the best document
    similarity when `relevance` is given, for calibrating `router.min_relevance`)."""
    records = []
    for item in tqdm(items, desc="router", unit="msg", disable=not progress):
        route = router.classify(item["message"])
        gold_domain = item.get("domain")
        best = relevance(route.embedding) if relevance is not None and route.embedding is not None else None
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
                "relevance": None if best is None else round(best, 4),
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
    oos = [r for r in records if r["gold_intent"] == "out_of_scope"]
    in_scope = [r for r in records if r["gold_intent"] in ("docs", "sql", "chart")]
    return {
        "n": len(records),
        "intent_accuracy": sum(r["intent_ok"] for r in records) / len(records),
        # Out of scope recognised, and in-scope questions wrongly refused as out of scope.
        "out_of_scope_recall": sum(r["intent"] == "out_of_scope" for r in oos) / len(oos) if oos else None,
        "false_refusal_rate": (
            sum(r["intent"] == "out_of_scope" for r in in_scope) / len(in_scope) if in_scope else None
        ),
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


def _router_variant(
    config: ProfilesConfig, classifier: str, training_file: str, min_relevance: float | None
) -> ProfilesConfig:
    """The profiles file with the router's knobs overridden for a comparison run."""
    update: dict[str, Any] = {}
    if classifier != "profile":
        update["classifier"] = classifier
    if training_file == "none":
        update["training_file"] = None
    elif training_file != "profile":
        path = Path(training_file)
        if not path.is_file():
            raise click.BadParameter(f"{path} is not a file", param_hint="--training-file")
        update["training_file"] = path.resolve()
    if min_relevance is not None:
        update["min_relevance"] = min_relevance or None
    return config.model_copy(update={"router": config.router.model_copy(update=update)})


@contextmanager
def _evidence(
    settings: Settings, embedder: Embedder, kb_root: Path | None, profile: Profile
) -> Iterator[Relevance | None]:
    """With --kb: the documents ingested into a throwaway store, and the router's relevance over them."""
    if kb_root is None:
        yield None
        return
    from rag_bot.evaluation.docs import fresh_store, ingest_knowledge_base
    from rag_bot.wiring import document_relevance

    with fresh_store(settings, embedder) as store:
        ingest_knowledge_base(store, embedder, kb_root.resolve())
        yield document_relevance(store, profile)


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
    "--split",
    type=click.Choice(SPLITS),
    default="all",
    show_default=True,
    help="Part of the set: tuning (tune on it), report (report it), all.",
)
@click.option(
    "--splits-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Committed ids of the parts (default: splits/<set>.json beside the JSONL).",
)
@click.option(
    "--classifier",
    type=click.Choice(["profile", "logreg", "prototypes"]),
    default="profile",
    show_default=True,
    help="Fast-path model: the profiles file's `router.classifier`, or override it.",
)
@click.option(
    "--training-file",
    default="profile",
    show_default=True,
    help="Generated examples: 'profile' (the profiles file's), 'none', or a JSONL path.",
)
@click.option(
    "--kb",
    "kb_root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Documents to ingest into a fresh store as the out-of-scope evidence (router.min_relevance).",
)
@click.option(
    "--min-relevance",
    type=float,
    default=None,
    help="Override router.min_relevance (needs --kb); 0 turns the check off.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=RESULTS_DIR / "eval_router.json",
    show_default=True,
)
def router(
    jsonl: Path,
    profile: str,
    profiles_file: Path,
    llm_mode: str,
    embedder_choice: str,
    split: str,
    splits_file: Path | None,
    classifier: str,
    training_file: str,
    kb_root: Path | None,
    min_relevance: float | None,
    out: Path,
) -> None:
    """Intent and domain accuracy of the router, its confusion matrix, slow-path share and latency."""
    settings = get_settings()
    config = _router_variant(load_profiles(profiles_file), classifier, training_file, min_relevance)
    bot_profile = config.profile(profile)
    inner, label = build_eval_embedder(settings, embedder_choice)
    embedder = CachedEmbedder(inner, settings.state_dir / "eval_cache" / "router_embeddings.npz")
    items = select_split(load_router_items(jsonl), jsonl, split, splits_file)
    with _evidence(settings, embedder, kb_root, bot_profile) as relevance, _llm_for_eval(settings, llm_mode) as (
        llm,
        llm_label,
    ):
        started = time.perf_counter()
        bot = Router(config, bot_profile, embedder, llm=llm, relevance=relevance)
        build_s = time.perf_counter() - started
        result = evaluate_router(bot, items, relevance=relevance)
    embedder.save()
    metrics = result["metrics"]
    payload = {
        "kind": "router",
        "set": str(jsonl),
        "split": split,
        "profile": profile,
        "embedder": label,
        "llm": llm_label,
        "classifier": config.router.classifier,
        "training_file": str(config.router.training_file) if config.router.training_file else None,
        "min_relevance": config.router.min_relevance if kb_root else None,
        "router_build_s": round(build_s, 2),
        **result,
    }
    write_json(out, payload)
    click.echo(f"embedder: {label}; slow path: {llm_label}; {metrics['n']} messages")
    lat = metrics["latency_ms"]
    click.echo(
        format_table(
            ["intent acc", "domain acc", "gold in routed", "oos recall", "false refusals", "slow share", "p50 ms",
             "p95 ms", "fast p50", "slow p50"],
            [
                [
                    metrics["intent_accuracy"],
                    metrics["domain_accuracy"],
                    metrics["domain_in_routed_share"],
                    metrics["out_of_scope_recall"],
                    metrics["false_refusal_rate"],
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
