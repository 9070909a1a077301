"""`rag-bot eval charts`: share of chart requests that produce a valid image, and share needing the retry.

Each request's data come from its gold SQL (run through the read-only runner), so the number measures
the chart step alone: code generation by the LLM + the sandbox. A chart counts as valid when the
sandbox returns a PNG that decodes; whether it shows what `expect` describes is not checked
automatically, so the JSON keeps every generated script for inspection.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from rag_bot.evaluation.common import format_table, percentile, read_jsonl, write_json


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
    from rag_bot.analytics.sql_guard import validate_sql
    from rag_bot.charts import answer_chart
    from rag_bot.config import get_settings
    from rag_bot.db import running_postgres
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
        with PostgresSqlRunner(url) as runner, SubprocessSandbox(pool_size=1) as box:
            for item in tqdm(items, desc="charts", unit="request"):
                data = runner.run(validate_sql(item["sql"], allowed_tables=runner.table_names()))
                started = time.perf_counter()
                chart = answer_chart(item["request"], data.columns, data.rows, llm=llm, sandbox=box,
                                     language=item.get("language", "en"))
                results.append({
                    "id": item["id"], "language": item.get("language"), "status": chart.status,
                    "valid_image": _valid_png(chart.png), "retried": chart.retried,
                    "seconds": time.perf_counter() - started, "code": chart.code,
                })
    n = len(results)
    summary = {
        "requests": n,
        "valid_image_share": sum(r["valid_image"] for r in results) / n if n else 0.0,
        "retry_share": sum(r["retried"] for r in results) / n if n else 0.0,
        "p50_s": percentile([r["seconds"] for r in results], 50),
        "p95_s": percentile([r["seconds"] for r in results], 95),
        "llm": settings.llm_model,
    }
    write_json(out, {"summary": summary, "results": results})
    click.echo(format_table(["requests", "valid image", "needed retry", "p50 s", "p95 s"],
                            [[n, f"{summary['valid_image_share']:.0%}", f"{summary['retry_share']:.0%}",
                              f"{summary['p50_s']:.1f}", f"{summary['p95_s']:.1f}"]]))
    click.echo(f"Results: {out}")
