"""Latency of classify + retrieve at 10k and 100k chunks, next to a bare pgvector top-k query.

Synthetic chunks: texts are sentences sampled from the demo knowledge base (so full-text search
sees real Russian/English words), embeddings are real passage embeddings of those sentences plus
small Gaussian noise (so the vectors cluster the way real chunks do), spread over the five domains
and both audiences. Rows go in with COPY; the HNSW index is built after the load.

Timed per query, with the query embedding computed beforehand (it is the same cost for every
variant; its own time is reported separately):
* bare:      SELECT id FROM chunks ORDER BY embedding <=> q LIMIT 5   (HNSW, no filter)
* classify:  the router's fast path (intent + domain classifier)
* retrieve:  rag_bot's hybrid search with the routed domain(s) and audience filters
* total:     classify + retrieve

    .venv/bin/python bench/retrieval_latency.py --sizes 10000,100000
Results: bench/results/retrieval_latency.{json,md}
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag_bot.assistant.routing import Router  # noqa: E402
from rag_bot.config import get_settings  # noqa: E402
from rag_bot.db import admin_url, ensure_database, with_database  # noqa: E402
from rag_bot.documents.retrieval import search_chunks  # noqa: E402
from rag_bot.evaluation.common import CachedEmbedder, build_eval_embedder, format_table, percentile  # noqa: E402
from rag_bot.profiles import load_profiles  # noqa: E402
from rag_bot.store import VectorStore  # noqa: E402

DOMAINS = ["hr", "sales", "support", "finance", "it"]


def kb_sentences(limit: int = 400) -> list[str]:
    texts = []
    for path in sorted((ROOT / "knowledge_base" / "docs").rglob("*.md")):
        body = path.read_text(encoding="utf-8").split("---", 2)[-1]
        texts += [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", body) if len(s.split()) >= 6]
    random.Random(7).shuffle(texts)
    return texts[:limit]


def load_chunks(url: str, dim: int, seeds: list[str], seed_vectors: np.ndarray, n: int) -> None:
    rng = np.random.default_rng(n)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP INDEX IF EXISTS chunks_embedding_hnsw")
        doc_ids = []
        for d in range(100):
            row = conn.execute(
                "INSERT INTO documents (source, title, domain, audience, language, content_hash) "
                "VALUES (%s, %s, %s, %s, 'ru', 'x') RETURNING id",
                (f"synthetic/{d}", f"Synthetic {d}", DOMAINS[d % 5], "public" if d % 3 == 0 else "internal"),
            ).fetchone()
            assert row is not None
            doc_ids.append((row[0], DOMAINS[d % 5], "public" if d % 3 == 0 else "internal"))
        picks = rng.integers(0, len(seeds), size=n)
        noise = rng.normal(0.0, 0.02, size=(n, dim)).astype(np.float32)
        vectors = seed_vectors[picks] + noise
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        with (
            conn.cursor() as cur,
            cur.copy("COPY chunks (document_id, ordinal, text, domain, audience, kind, embedding) FROM STDIN") as copy,
        ):
            for i in range(n):
                doc, domain, audience = doc_ids[i % len(doc_ids)]
                vec = "[" + ",".join(f"{x:.6f}" for x in vectors[i]) + "]"
                copy.write_row((doc, i, seeds[picks[i]], domain, audience, "doc", vec))
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute(
            "CREATE INDEX chunks_embedding_hnsw ON chunks USING hnsw (embedding vector_cosine_ops) "
            "WITH (m = 16, ef_construction = 64)"
        )
        conn.execute("ANALYZE chunks")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "retrieval_latency")
    args = parser.parse_args()
    settings = get_settings()
    inner, label = build_eval_embedder(settings)
    embedder = CachedEmbedder(inner, settings.state_dir / "eval_cache" / "bench_embeddings.npz")
    config = load_profiles()
    router = Router(config, config.profile("analyst"), embedder)
    messages = [
        json.loads(line)["message"]
        for line in (ROOT / "knowledge_base" / "eval" / "router.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    messages = (messages * (args.queries // len(messages) + 1))[: args.queries]
    seeds = kb_sentences()
    seed_vectors = embedder.embed_passages(seeds)
    started = time.perf_counter()
    query_vectors = {m: v for m, v in zip(messages, inner.embed_queries(messages), strict=True)}
    embed_ms = (time.perf_counter() - started) * 1000 / len(messages)
    embedder.embed_queries(messages)  # fill the cache: the router's own embedding call is then free
    embedder.save()

    admin = admin_url(settings)
    results = []
    for n in [int(s) for s in args.sizes.split(",")]:
        name = "rag_bot_bench_" + uuid.uuid4().hex[:8]
        ensure_database(admin, name)
        url = with_database(admin, name)
        try:
            store = VectorStore(url, embedder_name=embedder.name, dim=embedder.dim)
            store.migrate()
            t0 = time.perf_counter()
            load_chunks(url, embedder.dim, seeds, seed_vectors, n)
            load_s = time.perf_counter() - t0
            bare, classify, retrieve, total = [], [], [], []
            conn = store.conn
            for message in messages[:10]:  # warm-up: caches and the HNSW graph in shared buffers
                conn.execute("SELECT id FROM chunks ORDER BY embedding <=> %s LIMIT 5", (query_vectors[message],))
            for message in messages:
                q = query_vectors[message]
                t = time.perf_counter()
                conn.execute("SELECT id FROM chunks ORDER BY embedding <=> %s LIMIT 5", (q,)).fetchall()
                bare.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                route = router.classify(message)
                t1 = time.perf_counter()
                search_chunks(
                    message,
                    store=store,
                    embedder=embedder,
                    audience="internal",
                    domains=route.domains or None,
                    top_k=5,
                    embedding=q,
                )
                t2 = time.perf_counter()
                classify.append((t1 - t) * 1000)
                retrieve.append((t2 - t1) * 1000)
                total.append((t2 - t) * 1000)
            store.close()
            row = {"chunks": n, "load_s": round(load_s, 1)}
            for key, values in (("bare", bare), ("classify", classify), ("retrieve", retrieve), ("total", total)):
                row[f"{key}_p50_ms"] = round(percentile(values, 50), 2)
                row[f"{key}_p95_ms"] = round(percentile(values, 95), 2)
            row["total_over_bare_p50"] = round(row["total_p50_ms"] / row["bare_p50_ms"], 2)
            results.append(row)
            print(row, flush=True)  # noqa: T201 - a bench script reports on stdout
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    payload = {
        "embedder": label,
        "query_embedding_ms_batched_mean": round(embed_ms, 1),
        "queries": len(messages),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "results": results,
        "note": "query embedding excluded from all columns (same cost for every variant); router fast path only",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    headers = [
        "chunks",
        "bare p50",
        "bare p95",
        "classify p50",
        "retrieve p50",
        "retrieve p95",
        "total p50",
        "total p95",
        "total/bare p50",
    ]
    rows = [
        [
            r["chunks"],
            r["bare_p50_ms"],
            r["bare_p95_ms"],
            r["classify_p50_ms"],
            r["retrieve_p50_ms"],
            r["retrieve_p95_ms"],
            r["total_p50_ms"],
            r["total_p95_ms"],
            r["total_over_bare_p50"],
        ]
        for r in results
    ]
    table = format_table(headers, rows)
    args.out.with_suffix(".md").write_text(
        f"# Retrieval latency (ms)\n\nEmbedder: {label}; query embedding {embed_ms:.0f} ms/query amortised over one "
        f"batch of {len(messages)} (excluded; a single query alone costs more).\n"
        f"{len(messages)} queries from the router eval set; router fast path; top-5.\n\n{table}\n",
        encoding="utf-8",
    )
    print(table)  # noqa: T201


if __name__ == "__main__":
    main()
