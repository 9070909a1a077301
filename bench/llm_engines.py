"""Measure local LLM engines behind the OpenAI API: start time, TTFT, tokens/s, concurrency, peak RSS.

    uv run python bench/llm_engines.py --engines llamacpp,vllm --models qwen2.5-coder-1.5b,qwen2.5-coder-0.5b

One server at a time (the machine has 2 cores). Results are merged into bench/results/llm_engines.json
(keyed by engine and model, so runs can be added one by one) and rendered to llm_engines.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from openai import OpenAI

from rag_bot.config import Settings
from rag_bot.stack.llm_server import LLMServer, default_vllm_python, ensure_model_for_engine

RESULTS_DIR = Path(__file__).resolve().parent / "results"

PROMPT = (
    "Explain step by step how a hash map works internally (hashing, buckets, collisions, resizing), "
    "then give a short Python example."
)
CONCURRENT_PROMPTS = [
    "Explain how a B-tree index speeds up a SQL query, in detail.",
    "Describe the difference between processes and threads in an operating system, in detail.",
    "Explain how HTTPS protects a request from a browser to a server, step by step.",
    "Explain how garbage collection works in Python, in detail.",
    "Describe how a compiler turns source code into machine code, step by step.",
    "Explain what a database transaction is and what ACID means, in detail.",
    "Explain how DNS resolves a domain name, step by step.",
    "Describe how a vector database finds nearest neighbours, in detail.",
]

CLASSIFY = [
    {"role": "system", "content": "You route employee questions to a department."},
    {
        "role": "user",
        "content": "Which department handles this question: 'How many vacation days do I have left?' "
        "Departments: hr, sales, support. Explain your reasoning.",
    },
]
CHOICES = ["hr", "sales", "support"]
GBNF = 'root ::= "hr" | "sales" | "support"'


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engines", default="llamacpp")
    parser.add_argument("--models", default="qwen2.5-coder-1.5b,qwen2.5-coder-0.5b")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--start-timeout", type=float, default=900.0)
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--quiet-cpu",
        type=float,
        default=0.25,
        help="before each run, wait (up to --quiet-wait s) until other work uses less than this CPU share",
    )
    parser.add_argument("--quiet-wait", type=float, default=300.0)
    parser.add_argument("--threads", type=int, default=None, help="default: RAG_BOT_LLM_THREADS")
    args = parser.parse_args()

    settings = Settings()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    json_path = args.out_dir / "llm_engines.json"
    existing = json.loads(json_path.read_text()) if json_path.exists() else {"runs": []}
    runs: dict[tuple[str, str], dict[str, Any]] = {(r["engine"], r["model"]): r for r in existing["runs"]}

    for engine in args.engines.split(","):
        for model in args.models.split(","):
            log(f"=== {engine} / {model}")
            try:
                result = bench_one(engine, model, settings, args)
            except Exception as exc:  # a failed cell is recorded, the others still run
                log(f"FAILED: {exc}")
                result = {"engine": engine, "model": model, "error": str(exc)[-2000:]}
            result["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            runs[(engine, model)] = result
            write_results(json_path, list(runs.values()))
            log(json.dumps(result, indent=2))
    write_markdown(args.out_dir / "llm_engines.md", list(runs.values()))


def bench_one(engine: str, model: str, settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    vllm_python = default_vllm_python(settings.state_dir)
    t0 = time.perf_counter()
    model_path = ensure_model_for_engine(engine, model, settings.models_dir, vllm_python)  # type: ignore[arg-type]
    prepare_s = time.perf_counter() - t0
    compile_cache = Path.home() / ".cache" / "vllm" / "torch_compile_cache"
    warm_compile_cache = engine == "vllm" and compile_cache.exists() and any(compile_cache.iterdir())

    server = LLMServer(
        engine,  # type: ignore[arg-type]
        model_path,
        model,
        port=free_port(),
        context=settings.llm_context,
        threads=args.threads or settings.llm_threads,
        log_path=settings.logs_dir / f"bench-{engine}-{model}.log",
        vllm_python=vllm_python,
    )
    busy_before = wait_for_quiet(args.quiet_cpu, args.quiet_wait)
    sampler = RssSampler()
    t0 = time.perf_counter()
    sampler.start_watching(lambda: server.pid)
    try:
        server.start(args.start_timeout)
        start_s = time.perf_counter() - t0
        log(f"ready in {start_s:.1f} s at {server.base_url}")
        client = OpenAI(base_url=server.base_url, api_key="not-needed", timeout=600.0, max_retries=0)
        rss_idle = sampler.current()
        chat(client, model, "Say hi.", 8)  # warm-up, not measured

        contention = Contention(server.pid or 0)
        single = measure_stream(client, model, PROMPT, args.max_tokens)
        log(f"single: {single}")
        concurrent = measure_concurrent(client, model, args.max_tokens, args.concurrency)
        log(f"concurrent: {concurrent}")
        other_cpu = contention.other_share()
        log(f"other processes used {other_cpu:.0%} of the CPU during the measurement")
        structured = probe_structured(client, model)
        log(f"structured: {structured}")
    finally:
        server.stop()
        sampler.stop()

    return {
        "engine": engine,
        "model": model,
        "model_path": str(model_path),
        "threads": server.threads,
        "prepare_s": round(prepare_s, 1),
        "start_s": round(start_s, 1),
        "vllm_compile_cache_warm": warm_compile_cache if engine == "vllm" else None,
        "single": single,
        "concurrent": concurrent,
        "rss_idle_gb": round(rss_idle / 2**30, 2),
        "rss_peak_gb": round(sampler.peak / 2**30, 2),
        "structured": structured,
        # Other work on the machine skews the timings: the CPU share other processes used just before
        # the start and during the single + concurrent measurements (0.0 = the server had the box).
        "other_cpu_before": round(busy_before, 2),
        "other_cpu_during": round(other_cpu, 2),
    }


def chat(client: OpenAI, model: str, prompt: str, max_tokens: int) -> tuple[str, int, float]:
    t0 = time.perf_counter()
    response = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0.0,
    )
    elapsed = time.perf_counter() - t0
    tokens = response.usage.completion_tokens if response.usage else 0
    return response.choices[0].message.content or "", tokens, elapsed


def measure_stream(client: OpenAI, model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0.0,
        stream=True,
        stream_options={"include_usage": True},
    )
    first: float | None = None
    chunks = 0
    usage_tokens: int | None = None
    for event in stream:
        if event.usage is not None:
            usage_tokens = event.usage.completion_tokens
        if event.choices and event.choices[0].delta.content:
            if first is None:
                first = time.perf_counter()
            chunks += 1
    end = time.perf_counter()
    tokens = usage_tokens or chunks
    first = first or end
    return {
        "completion_tokens": tokens,
        "ttft_s": round(first - t0, 3),
        "total_s": round(end - t0, 2),
        "decode_tok_s": round((tokens - 1) / (end - first), 1) if tokens > 1 and end > first else None,
        "e2e_tok_s": round(tokens / (end - t0), 1),
    }


def measure_concurrent(client: OpenAI, model: str, max_tokens: int, n: int) -> dict[str, Any]:
    prompts = [CONCURRENT_PROMPTS[i % len(CONCURRENT_PROMPTS)] for i in range(n)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(lambda p: chat(client, model, p, max_tokens), prompts))
    wall = time.perf_counter() - t0
    tokens = sum(r[1] for r in results)
    latencies = sorted(r[2] for r in results)
    return {
        "requests": n,
        "completion_tokens": tokens,
        "wall_s": round(wall, 2),
        "aggregate_tok_s": round(tokens / wall, 1),
        "latency_s": [round(x, 2) for x in latencies],
        "latency_median_s": round(statistics.median(latencies), 2),
    }


def probe_structured(client: OpenAI, model: str) -> dict[str, Any]:
    """Which structured-output request shapes actually constrain this engine's output."""
    enum_schema = {"type": "string", "enum": CHOICES}
    shapes: dict[str, dict[str, Any]] = {
        "none": {},
        "structured_outputs.choice": {"extra_body": {"structured_outputs": {"choice": CHOICES}}},
        "response_format.json_schema": {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "choice", "schema": enum_schema},
            }
        },
        "response_format.json_object+schema": {
            "response_format": {"type": "json_object", "schema": enum_schema}
        },
        "grammar(gbnf)": {"extra_body": {"grammar": GBNF}},
        "structured_outputs.choice+grammar": {
            "extra_body": {"structured_outputs": {"choice": CHOICES}, "grammar": GBNF}
        },
    }
    out: dict[str, Any] = {}
    for name, kwargs in shapes.items():
        try:
            response = client.chat.completions.create(
                model=model,
                messages=CLASSIFY,
                max_tokens=40,
                temperature=0.0,
                **kwargs,  # type: ignore[arg-type]
            )
            text = response.choices[0].message.content or ""
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
            out[name] = {
                "text": text[:80],
                "exact_choice": text.strip() in CHOICES,
                "json_choice": parsed in CHOICES,
            }
        except Exception as exc:
            out[name] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return out


def cpu_busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user/nice
    return total - idle, total


def group_cpu_jiffies(pgid: int) -> int:
    """utime + stime of the live processes in a process group."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            continue
    return total


class Contention:
    """Share of all CPUs used by processes outside the server's group since construction."""

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid
        self.busy0, self.total0 = cpu_busy_jiffies()
        self.group0 = group_cpu_jiffies(pgid)

    def other_share(self) -> float:
        busy, total = cpu_busy_jiffies()
        group = group_cpu_jiffies(self.pgid)
        if total == self.total0:
            return 0.0
        return max(0.0, ((busy - self.busy0) - (group - self.group0)) / (total - self.total0))


def wait_for_quiet(threshold: float, max_wait_s: float) -> float:
    """Wait until the machine is mostly idle (other work skews every number); return the last share."""
    deadline = time.monotonic() + max_wait_s
    while True:
        busy0, total0 = cpu_busy_jiffies()
        time.sleep(3.0)
        busy1, total1 = cpu_busy_jiffies()
        share = (busy1 - busy0) / max(1, total1 - total0)
        if share < threshold:
            return share
        if time.monotonic() > deadline:
            log(f"machine still {share:.0%} busy after {max_wait_s:.0f} s; measuring anyway")
            return share
        log(f"machine {share:.0%} busy; waiting for it to calm down")


class RssSampler:
    """Peak resident memory of a process group (the server and its workers), sampled from /proc."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.peak = 0
        self._pid: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start_watching(self, pid_getter: Any) -> None:
        self._pid = pid_getter
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def current(self) -> int:
        pid = self._pid() if self._pid else None
        return group_rss(pid) if pid else 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(self.interval_s)


def group_rss(pgid: int) -> int:
    """Sum of VmRSS (bytes) over the processes whose process group is `pgid`."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
            # Fields after the parenthesised command: state ppid pgrp ...
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            with open(f"/proc/{entry.name}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError, IndexError):
            continue
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": round(mem_gb, 1),
        "python": platform.python_version(),
    }


def write_results(path: Path, runs: list[dict[str, Any]]) -> None:
    data = {"machine": machine(), "runs": sorted(runs, key=lambda r: (r["engine"], r["model"]))}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def write_markdown(path: Path, runs: list[dict[str, Any]]) -> None:
    m = machine()
    lines = [
        "# Local LLM engines on CPU",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM. Temperature 0, "
        "128 output tokens max, 2 threads. Generated by `bench/llm_engines.py`.",
        "",
        "| engine | model | start s | TTFT s | tok/s single (decode / e2e) | tok/s 4 concurrent "
        "| latency 4 conc. s (min-max) | peak RSS GB | other CPU load | structured choice |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    notes: list[str] = []
    for r in sorted(runs, key=lambda r: (r["engine"], r["model"])):
        if "error" in r:
            lines.append(f"| {r['engine']} | {r['model']} | failed: {r['error'][:80]} | | | | | | | |")
            continue
        s, c = r.get("single") or {}, r.get("concurrent") or {}
        ok = [
            k
            for k, v in (r.get("structured") or {}).items()
            if k != "none" and (v.get("exact_choice") or v.get("json_choice"))
        ]
        start = f"{r['start_s']}" + (
            " (compile cache cold)" if r.get("vllm_compile_cache_warm") is False else ""
        )
        lat = c.get("latency_s") or ["-"]
        other = r.get("other_cpu_during")
        other = f"{other:.0%}" if isinstance(other, float) else (other or "?")
        lines.append(
            f"| {r['engine']} | {r['model']} | {start} | {s.get('ttft_s', '-')} "
            f"| {s.get('decode_tok_s', '-')} / {s.get('e2e_tok_s', '-')} "
            f"| {c.get('aggregate_tok_s', '-')} | {lat[0]}-{lat[-1]} | {r.get('rss_peak_gb', '-')} "
            f"| {other} "
            f"| {', '.join(ok) or '-'} |"
        )
        if r.get("note"):
            notes.append(f"- {r['engine']} / {r['model']}: {r['note']}")
    lines += ["", *notes]
    lines += [
        "",
        "Structured choice column: request shapes whose reply was exactly one of the choices (or a JSON",
        "string of one). Raw replies per shape are in llm_engines.json (`structured`).",
        "",
    ]
    path.write_text("\n".join(lines))


def log(msg: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


if __name__ == "__main__":
    main()
