"""End to end with the real llama.cpp server (Qwen2.5-Coder-1.5B): the answer's rows must equal the
gold SQL's rows on the demo database. Slow (minutes on 2 CPU cores)."""

# ruff: noqa: F811  (pytest fixtures imported by name from analytics_fixtures)

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from analytics_fixtures import demo_admin_url, demo_db, demo_schema_store  # noqa: F401

from ingest.db_schema import sync_schema_notes
from rag_bot.analytics.narration import numbers_supported
from rag_bot.analytics.pipeline import AnalyticsAnswer, AnalyticsOptions, answer_analytics
from rag_bot.analytics.schema_context import add_solved_examples_file
from rag_bot.analytics.sql_runner import PostgresSqlRunner
from rag_bot.demo.load import DemoLoadReport
from rag_bot.embeddings import Embedder
from rag_bot.evaluation.sql import DEMO_TABLE_DOMAINS, expand_gold_variants, results_match, run_gold
from rag_bot.llm.openai_compat import OpenAICompatClient
from rag_bot.store import VectorStore

REPO = Path(__file__).resolve().parent.parent
GOLD = {json.loads(line)["question"]: json.loads(line) for line in
        (REPO / "knowledge_base/eval/sql_qa.jsonl").read_text(encoding="utf-8").splitlines()}


@pytest.fixture(scope="module")
def demo_store(pg_admin_url: str, demo_db: DemoLoadReport, embedder: Embedder) -> Iterator[VectorStore]:
    store = demo_schema_store(pg_admin_url, demo_db, embedder, "t_e2e_", domain=DEMO_TABLE_DOMAINS)
    sync_schema_notes(REPO / "knowledge_base/db/README.md", store, embedder, database="demo")
    # As `rag-bot up` sets up the chat: the demo's solved examples (none is an evaluation question).
    add_solved_examples_file(REPO / "knowledge_base/db/examples.yaml", store, embedder)
    yield store
    store.close()


def _answer_with_gold_rows(
    question: str, record: dict, llm: OpenAICompatClient, store: VectorStore, embedder: Embedder,
    demo_db: DemoLoadReport, demo_admin_url: str, *, ordered: bool,
) -> AnalyticsAnswer:
    """The analytics answer to `question` (demo DB, today 2025-12-31), asserted to have the gold SQL's rows."""
    with PostgresSqlRunner(demo_db.readonly_url, statement_timeout_ms=10000) as runner:
        answer = answer_analytics(question, llm=llm, store=store, embedder=embedder, runner=runner,
                                  language=record["language"], today=date(2025, 12, 31),
                                  options=AnalyticsOptions())  # the chat's defaults
    assert answer.status == "ok", (answer.status, answer.text, answer.attempts)
    # Any of the gold's variants (e.g. customers by name, or by id and name), as the eval scores it.
    golds = [run_gold(demo_admin_url, variant)[1] for variant in expand_gold_variants(record["sql"])]
    assert any(results_match(rows, answer.rows, ordered=ordered) for rows in golds), (answer.rows, answer.attempts)
    return answer


@pytest.mark.llm
@pytest.mark.e2e
@pytest.mark.quality
@pytest.mark.parametrize("question", ["top 5 customers by revenue in 2024", "Выручка по регионам за прошлый квартал"])
def test_real_llm_answers_with_the_gold_result(
    question: str, llamacpp_server: str, demo_store: VectorStore, embedder: Embedder,
    demo_db: DemoLoadReport, demo_admin_url: str,
) -> None:
    record = GOLD[question]
    llm = OpenAICompatClient(llamacpp_server, "ci-model", temperature=0.0, max_tokens=400, timeout_s=600)
    answer = _answer_with_gold_rows(question, record, llm, demo_store, embedder, demo_db, demo_admin_url,
                                    ordered="order by" in record["sql"].lower())
    # Explained, as in the chat: the LLM's narrative passed the number check (not the table-only
    # fallback sentence) and gives figures, all of which numbers_supported found in the result.
    assert answer.narrative_checked, answer.text
    assert numbers_supported(answer.text, answer.rows, question) == [] and re.search(r"\d", answer.text), answer.text


CHARTS = {json.loads(line)["request"]: json.loads(line) for line in
          (REPO / "knowledge_base/eval/charts.jsonl").read_text(encoding="utf-8").splitlines()}


@pytest.mark.llm
@pytest.mark.e2e
@pytest.mark.quality
@pytest.mark.parametrize("request_text", ["Построй график выручки по месяцам за 2024 год",
                                          "bar chart of tickets per category"])
def test_real_llm_draws_a_standalone_chart_request(
    request_text: str, llamacpp_server: str, demo_store: VectorStore, embedder: Embedder,
    demo_db: DemoLoadReport, demo_admin_url: str,
) -> None:
    """The chat's chart path with no earlier result: SQL from the request, then code, then the sandbox."""
    from rag_bot.analytics.charts import answer_chart
    from rag_bot.evaluation.charts import chart_matches, inspect_chart
    from sandbox import SubprocessSandbox

    record = CHARTS[request_text]
    llm = OpenAICompatClient(llamacpp_server, "ci-model", temperature=0.0, max_tokens=600, timeout_s=600)
    data = _answer_with_gold_rows(request_text, record, llm, demo_store, embedder, demo_db, demo_admin_url,
                                  ordered=False)
    with SubprocessSandbox(pool_size=1) as box:
        chart = answer_chart(request_text, data.columns, data.rows, llm=llm, sandbox=box,
                             language=record["language"])
        assert chart.status == "ok" and chart.code, chart.message
        summary = inspect_chart(box, chart.code, data.columns, data.rows)
    matches, why = chart_matches(summary, record["chart_type"], record["expect"])
    assert matches, (why, chart.code)
