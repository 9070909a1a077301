"""`rag-bot eval charts`: share of chart requests that produce a valid image, and share needing the retry.

Each request's data come from its gold SQL (run through the read-only runner), so the number measures
the chart step alone: code generation by the LLM + the sandbox. A chart counts as valid when the
sandbox returns a PNG that decodes. Whether it shows what `expect` describes is checked from the
figure itself: the generated script runs once more in the sandbox behind a prologue that, on
`savefig`, prints what each axes holds (bars, line points, scatter points, pie wedges, labels); the
chart matches when its kind fits `chart_type` and it draws the expected number of marks. The JSON
keeps every generated script and figure summary for inspection.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from rag_bot.evaluation.common import format_table, percentile, read_jsonl, write_json

# Runs inside the sandbox before the generated script (so it obeys the same rules): wraps savefig to
# print one JSON line per saved figure describing its marks.
INSPECT_PROLOGUE = """
import json as _json
import matplotlib.figure as _mfig

_savefig_inner = _mfig.Figure.savefig


def _describe_and_save(fig, *args, **kwargs):
    axes = []
    for ax in fig.get_axes():
        kinds = [type(p).__name__ for p in ax.patches]
        lines = [len(line.get_xdata()) for line in ax.get_lines() if len(line.get_xdata()) > 1]
        scatter = sum(len(c.get_offsets()) for c in ax.collections if type(c).__name__ == "PathCollection")
        heights = sum(p.get_height() for p in ax.patches if type(p).__name__ == "Rectangle")
        axes.append({"bars": kinds.count("Rectangle"), "bar_heights": float(heights),
                     "wedges": kinds.count("Wedge"), "lines": lines,
                     "scatter": scatter, "title": ax.get_title(), "xlabel": ax.get_xlabel(),
                     "ylabel": ax.get_ylabel()})
    print("CHART_SUMMARY " + _json.dumps({"axes": axes, "suptitle": fig._suptitle.get_text() if fig._suptitle else ""}))
    return _savefig_inner(fig, *args, **kwargs)


_mfig.Figure.savefig = _describe_and_save
"""

_KIND = {"line": "line", "bar": "bars", "barh": "bars", "grouped_bar": "bars", "stacked_bar": "bars",
         "histogram": "bars", "pie": "wedges", "scatter": "scatter"}


def figure_summary(stdout: str) -> dict[str, Any] | None:
    """The last CHART_SUMMARY line the prologue printed, or None when no figure was saved."""
    import json

    found = [line[len("CHART_SUMMARY "):] for line in stdout.splitlines() if line.startswith("CHART_SUMMARY ")]
    return json.loads(found[-1]) if found else None


def inspect_chart(box: Any, code: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[str, Any] | None:
    """Run the script again in the sandbox behind INSPECT_PROLOGUE; what its saved figure draws."""
    from rag_bot.analytics.charts import data_csv

    result = box.run(INSPECT_PROLOGUE + "\n" + code, {"data.csv": data_csv(columns, rows)}, timeout_s=20.0)
    return figure_summary(result.stdout) if result.ok else None


def chart_matches(summary: dict[str, Any] | None, chart_type: str, expect: dict[str, Any]) -> tuple[bool, str]:
    """Does the saved figure draw what the request asked for? (kind of marks, and how many)."""
    if not summary or not summary.get("axes"):
        return False, "no figure"
    marks = {"bars": 0, "wedges": 0, "line": 0, "scatter": 0}
    for ax in summary["axes"]:
        marks["bars"] += ax["bars"]
        marks["wedges"] += ax["wedges"]
        marks["line"] += sum(ax["lines"])
        marks["scatter"] += ax["scatter"]
    kind = _KIND.get(chart_type, "bars")
    drawn = marks[kind]
    if chart_type == "histogram":
        # Bins are the histogram's bars; the data points it counts are the sum of their heights.
        counted = sum(ax.get("bar_heights", 0.0) for ax in summary["axes"])
        wanted = expect.get("min_points", expect.get("points", 1))
        return counted >= wanted, f"histogram: {drawn} bins over {counted:g} values, expected at least {wanted}"
    if "min_points" in expect:
        ok = drawn >= expect["min_points"]
        return ok, f"{kind}: {drawn} marks, expected at least {expect['min_points']}"
    wanted = int(expect["points"])
    # One series must draw exactly one mark per point; grouped/stacked/multi-series charts at least that.
    multi = chart_type in ("grouped_bar", "stacked_bar") or "series" in expect or isinstance(expect.get("y"), list)
    ok = drawn >= wanted if multi else drawn == wanted
    return ok, f"{kind}: {drawn} marks, expected {'at least ' if multi else ''}{wanted}"


def _valid_png(data: bytes | None) -> bool:
    if not data or not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return False
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        return True
    except Exception:  # noqa: BLE001 - any decoding failure means "not a valid image"
        return False


@click.command("charts")
@click.option("--jsonl", type=click.Path(exists=True, path_type=Path),
              default=Path("knowledge_base/eval/charts.jsonl"), show_default=True)
@click.option("--limit", type=int, default=None, help="At most N requests.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench/results/eval_charts.json"),
              show_default=True)
def charts(jsonl: Path, limit: int | None, out: Path) -> None:
    """Chart requests -> LLM code -> sandbox: valid-image share and retry share."""
    from rag_bot.analytics.charts import answer_chart
    from rag_bot.analytics.sql_guard import validate_sql
    from rag_bot.config import get_settings
    from rag_bot.stack.postgres import running_postgres
    from rag_bot.wiring import build_llm, company_readonly_url

    settings = get_settings()
    items = read_jsonl(jsonl)
    items = items[:limit] if limit else items
    llm = build_llm(settings)
    results: list[dict[str, Any]] = []
    from rag_bot.analytics.sql_runner import PostgresSqlRunner
    from sandbox import SubprocessSandbox

    with running_postgres(settings):
        url = company_readonly_url(settings)
        assert url is not None
        with PostgresSqlRunner(url) as runner, SubprocessSandbox(
                pool_size=1, allow_weak_isolation=settings.sandbox_allow_weak_isolation) as box:
            for item in tqdm(items, desc="charts", unit="request"):
                data = runner.run(validate_sql(item["sql"], allowed_tables=runner.table_names()))
                started = time.perf_counter()
                chart = answer_chart(item["request"], data.columns, data.rows, llm=llm, sandbox=box,
                                     language=item.get("language", "en"))
                seconds = time.perf_counter() - started
                summary_ = None
                if chart.status == "ok" and chart.code:
                    summary_ = inspect_chart(box, chart.code, data.columns, data.rows)
                matches, why = chart_matches(summary_, item["chart_type"], item["expect"])
                results.append({
                    "id": item["id"], "language": item.get("language"), "status": chart.status,
                    "valid_image": _valid_png(chart.png), "matches": matches, "match_detail": why,
                    "retried": chart.retried, "seconds": seconds, "timings": chart.timings,
                    "figure": summary_, "code": chart.code,
                })
    n = len(results)
    summary = {
        "requests": n,
        "valid_image_share": sum(r["valid_image"] for r in results) / n if n else 0.0,
        "retry_share": sum(r["retried"] for r in results) / n if n else 0.0,
        "matches_share": sum(r["matches"] for r in results) / n if n else 0.0,
        "p50_s": percentile([r["seconds"] for r in results], 50),
        "p95_s": percentile([r["seconds"] for r in results], 95),
        "llm": settings.llm_model,
    }
    write_json(out, {"summary": summary, "results": results})
    click.echo(format_table(["requests", "valid image", "shows what was asked", "needed retry", "p50 s", "p95 s"],
                            [[n, f"{summary['valid_image_share']:.0%}", f"{summary['matches_share']:.0%}",
                              f"{summary['retry_share']:.0%}",
                              f"{summary['p50_s']:.1f}", f"{summary['p95_s']:.1f}"]]))
    click.echo(f"Results: {out}")
