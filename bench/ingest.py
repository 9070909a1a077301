"""Ingest throughput next to the raw embedder on the same texts, memory, and the no-op re-run.

Each measurement runs in its own child process (so its peak RSS and CPU seconds are its own), against
a throwaway embedded PostgreSQL that is deleted at the end:

* demo knowledge base (knowledge_base/docs): the raw embedder on exactly the texts the pipeline embeds
  (read + chunked beforehand, embedded in the pipeline's batch size), then `sync_documents` into an
  empty store: chunks/s of both and their ratio (target: ours >= 0.85 x raw), then a no-op re-run.
* topic-change splitting: the demo documents it applies to (long, no headings) ingested with it off
  and on; the difference is added to the whole demo ingest to give its slowdown.
* synthetic corpus of small documents (`--docs`, default 10,000, ~60 tokens each, ru/en): the first
  `--first` of them ingested for real (raw vs ours again, RSS sampled as the run goes, to show memory
  does not grow with the corpus); the rest written to the store with a stand-in embedder (random
  vectors, no model) so that the store holds the whole corpus; then the no-op re-run over all of it.
  The first run of the whole corpus is extrapolated from the measured part (throughput is per chunk).

Wall time moves with whatever else runs on the machine, so CPU seconds are recorded beside it and
the load average is written into the results.

    .venv/bin/python bench/ingest.py [--docs 10000] [--first 1000] [--rounds 5]
Results: bench/results/ingest.{json,md}
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import random
import resource
import shutil
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
DEMO = ROOT / "knowledge_base" / "docs"


# -- helpers that run in the children ----------------------------------------------------------------
def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _embedder(kind: str) -> Any:
    from rag_bot.config import Settings
    from rag_bot.embeddings import FastE5Embedder

    if kind == "standin":
        return StandInEmbedder()
    settings = Settings()
    return FastE5Embedder(settings.cache_dir / "embeddings", backend=settings.embedding_backend)


class StandInEmbedder:
    """Random unit vectors keyed by the text: the pipeline's cost without the model's."""

    name = "multilingual-e5-small"  # the store refuses a different name
    dim = 384

    def _vectors(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = np.random.default_rng(zlib.crc32(text.encode())).standard_normal(self.dim)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._vectors(texts)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._vectors(texts)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def child_raw(root: str, semantic: bool, batch: int) -> dict[str, Any]:
    """The embedder alone on exactly the texts the pipeline would embed for `root`."""
    from ingest.chunking import ChunkingOptions, chunk_document
    from ingest.documents import iter_files, load_document
    from ingest.pipeline import embedding_text

    embedder = _embedder("e5")
    base = Path(root)
    texts: list[str] = []
    for item in iter_files(base):
        if isinstance(item, tuple):
            continue
        try:
            loaded = load_document(item, root=base)
        except Exception:  # noqa: BLE001 - the pipeline reports these; they embed nothing
            continue
        chunks = chunk_document(loaded, ChunkingOptions(semantic=semantic), embedder=embedder)
        texts += [embedding_text(loaded.title, c.heading, c.text) for c in chunks]
    embedder.embed_passages(texts[:8])  # warm-up: page in the weights, start the thread pool

    def run() -> None:
        for start in range(0, len(texts), batch):
            embedder.embed_passages(texts[start : start + batch])

    _, wall, cpu = _timed(run)
    return {"backend": embedder.backend, "chunks": len(texts), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "chunks_per_s": round(len(texts) / wall, 2), "peak_rss_mb": round(_peak_rss_mb(), 1)}


def child_ingest(url: str, root: str, kind: str, semantic: bool, sample_every: int) -> dict[str, Any]:
    """One `sync_documents` run, timed, with the process's RSS sampled every `sample_every` files."""
    from ingest.chunking import ChunkingOptions
    from ingest.pipeline import sync_documents
    from rag_bot.store import VectorStore

    embedder = _embedder(kind)
    if kind != "standin":
        embedder.embed_passages(["warm-up"] * 8)
    # Throughput, not process start-up: import the chunkers and readers (llama-index takes seconds,
    # pypdf, python-docx, openpyxl and bs4 0.1-0.2 s each) and load the chunkers' tokenizer (tiktoken's
    # table, 0.5 s) before the clock starts, as child_raw does by chunking first and as the embedder's
    # model is loaded first. The CLI no-op row below includes start-up.
    import importlib

    from llama_index.core.utils import get_tokenizer

    for module in ("llama_index.core.node_parser", "bs4", "docx", "openpyxl", "pypdf"):
        importlib.import_module(module)

    get_tokenizer()("warm-up")

    store = VectorStore(url, embedder_name=embedder.name, dim=embedder.dim)
    store.migrate()
    samples: list[tuple[int, float]] = [(0, round(_rss_mb(), 1))]
    seen = 0

    def progress(_name: str) -> None:
        nonlocal seen
        seen += 1
        if seen % sample_every == 0:
            samples.append((seen, round(_rss_mb(), 1)))

    report, wall, cpu = _timed(
        lambda: sync_documents(Path(root), store, embedder, chunking=ChunkingOptions(semantic=semantic),
                               progress=progress)
    )
    store.close()
    return {
        "files": seen, "added": len(report.added), "updated": len(report.updated),
        "unchanged": len(report.unchanged), "failed": len(report.failed), "chunks": report.chunks,
        "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
        "chunks_per_s": round(report.chunks / wall, 2) if report.chunks else None,
        "peak_rss_mb": round(_peak_rss_mb(), 1), "rss_mb_by_files": samples,
    }


def child_semantic_docs(root: str) -> list[str]:
    """Demo files that topic-change splitting applies to."""
    from ingest.chunking import ChunkingOptions, wants_semantic_split
    from ingest.documents import iter_files, load_document

    base = Path(root)
    out = []
    for item in iter_files(base):
        if isinstance(item, tuple):
            continue
        try:
            if wants_semantic_split(load_document(item, root=base), ChunkingOptions()):
                out.append(str(item.relative_to(base)))
        except Exception:  # noqa: BLE001
            continue
    return out


def cli_rerun(url: str, root: str) -> dict[str, Any]:
    """`rag-bot ingest docs ROOT` as a user runs it: process start, embedder load, file count, sync."""
    import subprocess

    env = {**os.environ, "RAG_BOT_DATABASE_URL": url}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rag_bot", "ingest", "docs", root], env=env, cwd=ROOT,
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    lines = proc.stdout.strip().splitlines()
    output = lines[-1] if lines else proc.stderr[-500:]
    return {"wall_s": round(wall, 2), "returncode": proc.returncode, "output": output}


def paired(rounds: int, raw: Callable[[], dict[str, Any]], ingest: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`rounds` alternating runs of the raw embedder and the ingest, and their ratios.

    This machine's speed drifts by 10-20 % from one minute to the next (a shared VM: the same
    raw embedding measured 84-98 chunks/s in three runs), so one pair of runs says little; the
    report gives every round's ratio and their median, and the round with the median ratio as
    the representative one.
    """
    runs = []
    for k in range(rounds):
        r, i = raw(), ingest()
        runs.append({"raw": r, "ingest": i, "ratio": round(i["chunks_per_s"] / r["chunks_per_s"], 3),
                     "cpu_ratio": round(r["cpu_s"] / i["cpu_s"], 3)})
        _log(f"  round {k + 1}: raw {r['chunks_per_s']} chunks/s ({r['cpu_s']} CPU s), ingest "
             f"{i['chunks_per_s']} ({i['cpu_s']}): {runs[-1]['ratio']}")
    median = sorted(runs, key=lambda run: run["ratio"])[len(runs) // 2]
    return {
        "raw": median["raw"], "ingest": median["ingest"], "ours_over_raw": median["ratio"],
        "cpu_ours_over_raw": sorted(run["cpu_ratio"] for run in runs)[len(runs) // 2],
        "ratios": [run["ratio"] for run in runs], "cpu_ratios": [run["cpu_ratio"] for run in runs],
    }


def in_child(fn: Callable[..., Any], *args: Any) -> Any:
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


# -- corpus --------------------------------------------------------------------------------------------
WORDS_EN = ("order delivery invoice warranty laptop monitor customer contract payment refund warehouse "
            "discount manager report server backup policy employee request ticket region").split()
WORDS_RU = ("заказ доставка счёт гарантия ноутбук монитор клиент договор оплата возврат склад скидка "
            "менеджер отчёт сервер копия политика сотрудник заявка регион").split()


def write_corpus(folder: Path, n: int, first: int) -> None:
    """n small Markdown documents (~60 tokens), the first `first` under part-a/, the rest under part-b/."""
    rng = random.Random(42)
    for i in range(n):
        words = WORDS_RU if i % 2 else WORDS_EN
        part = "part-a" if i < first else "part-b"
        sentences = [
            " ".join(rng.choice(words) for _ in range(rng.randint(6, 10))).capitalize() + f" {rng.randint(1, 9999)}."
            for _ in range(3)
        ]
        path = folder / part / f"{i // 500:03d}" / f"doc-{i:05d}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# Document {i}\n\n" + " ".join(sentences) + "\n", encoding="utf-8")


# -- main --------------------------------------------------------------------------------------------
def _new_db(admin: str) -> str:
    from rag_bot.db import ensure_database, with_database

    name = "bench_" + uuid.uuid4().hex[:10]
    ensure_database(admin, name)
    return with_database(admin, name)


def _log(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--docs", type=int, default=10_000, help="synthetic corpus size")
    ap.add_argument("--first", type=int, default=1_000, help="synthetic documents ingested with the real model")
    ap.add_argument("--demo-dir", type=Path, default=DEMO, help="the real documents (default: the demo's)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--rounds", type=int, default=5, help="raw/ingest pairs per corpus; the median is reported")
    ap.add_argument("--note", default="", help="what else ran on the machine (shown in the report)")
    args = ap.parse_args()
    demo = args.demo_dir.resolve()

    from rag_bot.stack.postgres import start_embedded, stop_embedded

    work = Path(tempfile.mkdtemp(prefix="rag_bot_bench_ingest_"))
    load_start = os.getloadavg()
    started = time.perf_counter()
    try:
        admin = start_embedded(work / "pg")
        batch = 64  # the pipeline's default batch_chunks

        def ingest_into_new_store(urls: list[str], root: Path, sample_every: int) -> dict[str, Any]:
            urls.append(_new_db(admin))
            return in_child(child_ingest, urls[-1], str(root), "e5", False, sample_every)

        _log(f"demo: raw embedder, then ingest (topic splitting off), {args.rounds} rounds ...")
        demo_urls: list[str] = []
        demo_pairs = paired(
            args.rounds,
            lambda: in_child(child_raw, str(demo), False, batch),
            lambda: ingest_into_new_store(demo_urls, demo, 10),
        )
        demo_url = demo_urls[-1]
        demo_raw, demo_off = demo_pairs["raw"], demo_pairs["ingest"]
        _log("demo: no-op re-run ...")
        demo_noop = in_child(child_ingest, demo_url, str(demo), "e5", False, 10)
        _log(f"  {demo_noop}")

        semantic_files = in_child(child_semantic_docs, str(demo))
        subset = work / "semantic-subset"
        for rel in semantic_files:
            for src in (demo / rel, demo / (rel + ".meta.yaml")):
                if src.exists():
                    (subset / src.relative_to(demo)).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, subset / src.relative_to(demo))
        _log(f"semantic: {semantic_files} off / on ...")
        sem_off = in_child(child_ingest, _new_db(admin), str(subset), "e5", False, 1)
        sem_on = in_child(child_ingest, _new_db(admin), str(subset), "e5", True, 1)
        _log(f"  off {sem_off}\n  on  {sem_on}")

        corpus = work / "corpus"
        write_corpus(corpus, args.docs, args.first)
        _log(f"synthetic: raw embedder, then ingest, on the first {args.first}, {args.rounds} rounds ...")
        syn_urls: list[str] = []
        syn_pairs = paired(
            args.rounds,
            lambda: in_child(child_raw, str(corpus / "part-a"), False, batch),
            lambda: ingest_into_new_store(syn_urls, corpus / "part-a", max(1, args.first // 10)),
        )
        url = syn_urls[-1]  # the last round's store gets the rest of the corpus
        syn_first = syn_pairs["ingest"]
        _log(f"synthetic: the other {args.docs - args.first} with the stand-in embedder ...")
        syn_rest = in_child(child_ingest, url, str(corpus / "part-b"), "standin", False,
                            max(1, (args.docs - args.first) // 10))
        _log(f"  {syn_rest}")
        _log(f"synthetic: no-op re-run over all {args.docs} ...")
        syn_noop = in_child(child_ingest, url, str(corpus), "e5", False, max(1, args.docs // 10))
        _log(f"  {syn_noop}")
        syn_cli = cli_rerun(url, str(corpus))
        _log(f"  the whole command: {syn_cli}")
        stop_embedded(work / "pg")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    sem_delta = sem_on["wall_s"] - sem_off["wall_s"]
    first_extrapolated = syn_first["wall_s"] * args.docs / args.first
    load_end = os.getloadavg()
    report = {
        "machine": {
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "loadavg_1_5_15_at_start": [round(x, 2) for x in load_start],
            "loadavg_1_5_15_at_end": [round(x, 2) for x in load_end],
            "note": args.note,
        },
        "embedder": f"FastE5 (multilingual-e5-small, {demo_raw['backend']})",  # the backend that actually ran
        "bench_wall_s": round(time.perf_counter() - started, 1),
        "demo": {
            **demo_pairs, "noop_rerun": demo_noop,
        },
        "semantic": {
            "files": semantic_files, "off": sem_off, "on": sem_on, "delta_s": round(sem_delta, 2),
            "demo_ingest_slowdown": round(sem_delta / demo_off["wall_s"], 3),
        },
        "synthetic": {
            "docs": args.docs, "first_measured": args.first, **syn_pairs, "first": syn_first,
            "rest_standin": syn_rest, "noop_rerun": syn_noop, "noop_rerun_cli": syn_cli,
            "first_run_extrapolated_s": round(first_extrapolated, 1),
            "noop_over_first": round(syn_noop["wall_s"] / first_extrapolated, 4),
            "noop_cli_over_first": round(syn_cli["wall_s"] / first_extrapolated, 4),
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ingest.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (args.out / "ingest.md").write_text(render_md(report))
    sys.stdout.write(render_md(report))


def render_md(r: dict[str, Any]) -> str:
    m, d, s, y = r["machine"], r["demo"], r["semantic"], r["synthetic"]
    rss = ", ".join(f"{f}: {mb:.0f}" for f, mb in y["first"]["rss_mb_by_files"])
    rss_noop = ", ".join(f"{f}: {mb:.0f}" for f, mb in y["noop_rerun"]["rss_mb_by_files"])
    return "\n".join([
        "# Ingest throughput, memory and the no-op re-run",
        "",
        f"{m['cpus']} CPUs, load average (1/5/15 min) {m['loadavg_1_5_15_at_start']} at the start and "
        f"{m['loadavg_1_5_15_at_end']} at the end{'; ' + m['note'] if m.get('note') else ''}. Wall times move "
        "with whatever else runs; compare the columns of one run, and the CPU seconds.",
        f"Embedder: {r.get('embedder', 'FastE5')}, both cores; batches of 64 chunks. Bench took "
        f"{r['bench_wall_s']} s. Reproduce: `.venv/bin/python bench/ingest.py --docs {y['docs']} "
        f"--first {y['first_measured']} --rounds {len(d['ratios'])}`.",
        "",
        "The rows above the ratio are the round with the median ratio; rounds alternate raw and ingest "
        "runs, each in a fresh process and, for the ingest, a fresh store.",
        "",
        "| | demo knowledge base | synthetic small documents |",
        "|---|---|---|",
        f"| files / chunks | {d['ingest']['files']} / {d['ingest']['chunks']} | {y['first']['files']} / "
        f"{y['first']['chunks']} (first {y['first_measured']} of {y['docs']}) |",
        f"| raw embedder, same texts: chunks/s (CPU s) | {d['raw']['chunks_per_s']} ({d['raw']['cpu_s']}) "
        f"| {y['raw']['chunks_per_s']} ({y['raw']['cpu_s']}) |",
        f"| ingest (read, chunk, embed, write): chunks/s (CPU s) | {d['ingest']['chunks_per_s']} "
        f"({d['ingest']['cpu_s']}) | {y['first']['chunks_per_s']} ({y['first']['cpu_s']}) |",
        f"| ours / raw, wall (CPU): median of {len(d['ratios'])} rounds | {d['ours_over_raw']} "
        f"({d['cpu_ours_over_raw']}) | {y['ours_over_raw']} ({y['cpu_ours_over_raw']}) |",
        f"| ours / raw, wall, each round | {', '.join(map(str, d['ratios']))} | {', '.join(map(str, y['ratios']))} |",
        f"| peak RSS: ingest / raw embedder (MB) | {d['ingest']['peak_rss_mb']:.0f} / {d['raw']['peak_rss_mb']:.0f} "
        f"| {y['first']['peak_rss_mb']:.0f} / {y['raw']['peak_rss_mb']:.0f} |",
        f"| first run (s) | {d['ingest']['wall_s']} | {y['first']['wall_s']} for {y['first_measured']}; "
        f"{y['docs']} extrapolated: {y['first_run_extrapolated_s']} |",
        f"| no-op re-run (s) | {d['noop_rerun']['wall_s']} ({d['noop_rerun']['unchanged']} unchanged) | "
        f"{y['noop_rerun']['wall_s']} over all {y['noop_rerun']['unchanged']} documents |",
        f"| no-op / first run | {round(d['noop_rerun']['wall_s'] / d['ingest']['wall_s'], 4)} | "
        f"{y['noop_over_first']} (target < 0.05) |",
        f"| no-op re-run as the whole `rag-bot ingest docs` command (s) | | {y['noop_rerun_cli']['wall_s']} "
        f"({y['noop_cli_over_first']} of the first run): Python start, imports, counting the files; the model "
        "is not loaded when nothing changed |",
        "",
        f"RSS (MB) by files processed, first {y['first_measured']} synthetic documents: {rss}; "
        f"no-op re-run over {y['docs']}: {rss_noop}. The other {y['docs'] - y['first_measured']} documents "
        f"were written with a stand-in embedder (random vectors, no model) in {y['rest_standin']['wall_s']} s "
        f"({y['rest_standin']['cpu_s']} CPU s): the pipeline's own cost without the model.",
        "",
        "## Topic-change splitting",
        "",
        f"Applies to {len(s['files'])} of the demo's {d['ingest']['files']} files ({', '.join(s['files'])}): "
        f"long text without headings. Ingesting them: off {s['off']['wall_s']} s ({s['off']['chunks']} chunks), "
        f"on {s['on']['wall_s']} s ({s['on']['chunks']} chunks): +{s['delta_s']} s wall, "
        f"+{s['on']['cpu_s'] - s['off']['cpu_s']:.1f} CPU s. The whole demo ingest is "
        f"{s['demo_ingest_slowdown'] * 100:.0f} % slower with it on by wall time, "
        f"{(s['on']['cpu_s'] - s['off']['cpu_s']) / d['ingest']['cpu_s'] * 100:.0f} % by CPU seconds: it embeds "
        "every sentence with its neighbours (three sentences per text, so about three times the document's "
        "tokens) before the chunks themselves. `RAG_BOT_SEMANTIC_CHUNKING=false` turns it off.",
        "",
    ])


if __name__ == "__main__":
    main()
