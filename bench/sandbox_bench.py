"""Chart sandbox latency and throughput: warm pool vs cold starts vs in-process exec (unsafe lower bound).

Run: `uv run python bench/sandbox_bench.py [--quick]`. Writes bench/results/sandbox.json and .md.

Modes, each over the same 20 small chart scripts (bar/line/pie/scatter/hist of a small CSV):
  in_process    exec() in this process, Agg backend: what rendering alone costs. BENCH ONLY: never do
                this with LLM code in the bot.
  warm_pool     SubprocessSandbox(pool_size=2), with a warm worker waiting (the pool refills between
                requests, as it does between chat messages).
  zygote_cold   pool_size=0: a worker forked from the warmed zygote on demand.
  cold_process  pool_size=0, prefork=False: a fresh interpreter per chart (imports matplotlib+pandas).
Throughput: 8 client threads sending requests concurrently, pool_size=2 (default) and pool_size=8.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandbox import SubprocessSandbox, describe_isolation  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def make_csv(rows: int = 60) -> bytes:
    lines = ["месяц,регион,выручка,заказы,средний_чек"]
    regions = ["Москва", "Казань", "Новосибирск", "Екатеринбург"]
    for i in range(rows):
        revenue = 1000 + (i * 137) % 900
        orders = 20 + (i * 31) % 70
        lines.append(f"2024-{i % 12 + 1:02d},{regions[i % 4]},{revenue},{orders},{revenue / orders:.1f}")
    return ("\n".join(lines) + "\n").encode()


HEADER = "import pandas as pd\nimport matplotlib.pyplot as plt\ndf = pd.read_csv('data.csv')\n"
KINDS = {
    "bar": "df.groupby('регион')['{col}'].sum().plot.bar(ax=ax, color='teal')\n",
    "line": "df.groupby('месяц')['{col}'].mean().plot(ax=ax, marker='o')\n",
    "pie": "df.groupby('регион')['{col}'].sum().plot.pie(ax=ax, autopct='%1.0f%%')\n",
    "scatter": "ax.scatter(df['заказы'], df['{col}'], alpha=0.6)\nax.set_xlabel('Заказы')\n",
    "hist": "ax.hist(df['{col}'], bins=15, color='orange')\n",
}
COLUMNS = ["выручка", "заказы", "средний_чек", "выручка"]


def chart_scripts() -> list[str]:
    scripts = []
    for variant, col in enumerate(COLUMNS):
        for kind, body in KINDS.items():
            size = (6 + variant, 4 + variant % 2)
            scripts.append(
                HEADER + f"fig, ax = plt.subplots(figsize={size}, dpi=100)\n" + body.format(col=col)
                + f"ax.set_title('{kind}: {col} по регионам')\nfig.tight_layout()\nplt.savefig('chart.png')\n"
            )  # fmt: skip
    return scripts


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(latencies: list[float]) -> dict[str, float]:
    return {
        "n": len(latencies),
        "p50_s": round(percentile(latencies, 0.5), 3),
        "p95_s": round(percentile(latencies, 0.95), 3),
        "mean_s": round(statistics.fmean(latencies), 3),
        "max_s": round(max(latencies), 3),
    }


@contextlib.contextmanager
def chdir(path: str) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def bench_in_process(scripts: list[str], csv: bytes) -> list[float]:
    """The unsafe lower bound: exec in this very process (imports are warm after the first call)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas  # noqa: F401

    matplotlib.rcParams["font.family"] = "DejaVu Sans"
    times = []
    for code in [scripts[0], *scripts]:  # first run warms caches; not counted
        with tempfile.TemporaryDirectory() as tmp, chdir(tmp), contextlib.redirect_stdout(io.StringIO()):
            Path("data.csv").write_bytes(csv)
            t0 = time.perf_counter()
            exec(compile(code, "<chart>", "exec"), {"__name__": "__main__"})  # noqa: S102 - bench only
            plt.close("all")
            assert Path("chart.png").stat().st_size > 1000
            times.append(time.perf_counter() - t0)
    return times[1:]


def bench_sandbox(box: SubprocessSandbox, scripts: list[str], csv: bytes, *, wait_warm: bool) -> list[float]:
    times = []
    for code in scripts:
        if wait_warm:
            box.wait_ready(120)
        result = box.run(code, {"data.csv": csv}, timeout_s=30)
        assert result.ok and result.pngs, result.error
        times.append(result.duration_s)
    return times


def bench_concurrent(pool_size: int, scripts: list[str], csv: bytes, clients: int = 8) -> dict[str, float]:
    with SubprocessSandbox(pool_size=pool_size) as box:
        box.wait_ready(120)
        jobs = scripts * 2

        def one(code: str) -> float:
            result = box.run(code, {"data.csv": csv}, timeout_s=60)
            assert result.ok, result.error
            return result.duration_s

        t0 = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            latencies = list(pool.map(one, jobs))
        wall = time.perf_counter() - t0
    return {"clients": clients, "pool_size": pool_size, "jobs": len(jobs), "wall_s": round(wall, 2),
            "charts_per_s": round(len(jobs) / wall, 2), **summary(latencies)}  # fmt: skip


def timed(label: str, fn: Callable[[], list[float]]) -> dict[str, float]:
    sys.stdout.write(f"{label} ... ")
    sys.stdout.flush()
    stats = summary(fn())
    sys.stdout.write(f"p50 {stats['p50_s']:.3f}s p95 {stats['p95_s']:.3f}s\n")
    return stats


def render_markdown(report: dict) -> str:
    lat = report["latency"]
    base = lat["in_process"]["p50_s"]
    lines = [
        "# Chart sandbox benchmark",
        "",
        f"Host: {report['host']['cpus']} CPUs, {report['host']['platform']}; load average before/after: "
        f"{report['host']['loadavg_before']} / {report['host']['loadavg_after']}. "
        f"Isolation: {report['isolation']['summary']}.",
        "",
        f"Latency per chart, {report['scripts']} small chart scripts (bar/line/pie/scatter/hist of a "
        "60-row CSV), sequential:",
        "",
        "| mode | p50 s | p95 s | mean s | p50 vs in-process |",
        "|---|---|---|---|---|",
    ]
    for mode in ("in_process", "warm_pool", "zygote_cold", "cold_process"):
        s = lat[mode]
        lines.append(f"| {mode} | {s['p50_s']:.3f} | {s['p95_s']:.3f} | {s['mean_s']:.3f} | "
                     f"{s['p50_s'] / base:.1f}× |")  # fmt: skip
    lines += [
        "",
        f"Throughput, {report['throughput'][0]['clients']} concurrent clients, "
        f"{report['throughput'][0]['jobs']} charts:",
        "",
        "| pool size | charts/s | wall s | p50 s | p95 s |",
        "|---|---|---|---|---|",
    ]
    for t in report["throughput"]:
        lines.append(
            f"| {t['pool_size']} | {t['charts_per_s']} | {t['wall_s']} | {t['p50_s']:.3f} "
            f"| {t['p95_s']:.3f} |"
        )
    warm = lat["warm_pool"]["p50_s"]
    lines += [
        "",
        f"Target: warm p50 ≤ 0.5 s → {'met' if warm <= 0.5 else 'NOT met'} ({warm:.3f} s); "
        f"within 2× of in-process → {'met' if warm <= 2 * base else 'NOT met'} ({warm / base:.1f}×).",
        "",
        "in_process is the unsafe lower bound (exec in the bench process); it is never used by the bot.",
        "warm_pool latency includes job transfer, the run in a confined worker, result validation and",
        "tearing the worker down; zygote_cold adds forking and confining a worker on demand; cold_process",
        "starts a fresh interpreter that imports matplotlib, numpy and pandas.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 scripts per mode; for a smoke test")
    args = parser.parse_args()
    scripts = chart_scripts()[: 5 if args.quick else 20]
    csv = make_csv()
    load_before = os.getloadavg()
    isolation = describe_isolation()

    latency = {"in_process": timed("in_process", lambda: bench_in_process(scripts, csv))}
    with SubprocessSandbox(pool_size=2) as box:
        box.wait_ready(120)
        latency["warm_pool"] = timed("warm_pool", lambda: bench_sandbox(box, scripts, csv, wait_warm=True))
    with SubprocessSandbox(pool_size=0) as box:
        box.run("x = 1")  # start the zygote; not counted
        latency["zygote_cold"] = timed(
            "zygote_cold", lambda: bench_sandbox(box, scripts, csv, wait_warm=False)
        )
    with SubprocessSandbox(pool_size=0, prefork=False) as box:
        latency["cold_process"] = timed(
            "cold_process", lambda: bench_sandbox(box, scripts, csv, wait_warm=False)
        )
    throughput = []
    for pool_size in (2, 8):
        sys.stdout.write(f"throughput, pool_size={pool_size} ... ")
        sys.stdout.flush()
        throughput.append(bench_concurrent(pool_size, scripts, csv))
        sys.stdout.write(f"{throughput[-1]['charts_per_s']} charts/s\n")

    report = {
        "host": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "isolation": isolation,
        "scripts": len(scripts),
        "latency": latency,
        "throughput": throughput,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sandbox.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    markdown = render_markdown(report)
    (RESULTS / "sandbox.md").write_text(markdown)
    sys.stdout.write("\n" + markdown)


if __name__ == "__main__":
    main()
