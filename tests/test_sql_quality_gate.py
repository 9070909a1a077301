"""Quality gate: the real 1.5B model on 10 data questions of the demo set's REPORT part, scored with
`rag-bot eval sql`'s rules, with the deployment's own solved examples (knowledge_base/db/examples.yaml,
none a near-copy of an evaluated question) as the chat runs.

NOT in CI yet (marked `quality`), and GATE_MINIMUM is NOT calibrated: the only full run (2026-12-07,
cold start, load average ~10) answered 0 of 10 correctly and took 33 min, far over the ~10 min a CI
gate may cost; a gate that always fails or cannot fail is no gate. Issue 19 stays open on exactly this:
make the 10 questions answerable in ~1 min each, calibrate, then drop the `quality` mark so that
`scripts/test.sh` runs it. Run it on demand: `scripts/test.sh tests/test_sql_quality_gate.py -m quality -s`.
"""

# ruff: noqa: F811  (pytest fixtures imported by name from analytics_fixtures)

from __future__ import annotations

from pathlib import Path

import pytest
from analytics_fixtures import demo_admin_url, demo_db, demo_schema_store  # noqa: F401

from ingest.db_schema import sync_schema_notes
from rag_bot.analytics.pipeline import AnalyticsOptions, answer_analytics
from rag_bot.analytics.schema_context import add_solved_examples_file
from rag_bot.analytics.sql_runner import PostgresSqlRunner
from rag_bot.demo.load import DemoLoadReport
from rag_bot.embeddings import Embedder
from rag_bot.evaluation.sql import DEMO_TABLE_DOMAINS
from rag_bot.evaluation.sql_items import EvalItem, apply_split, load_jsonl, select_items, split_path
from rag_bot.evaluation.sql_scoring import score
from rag_bot.llm.openai_compat import OpenAICompatClient

REPO = Path(__file__).resolve().parent.parent
SET = REPO / "knowledge_base/eval/sql_qa.jsonl"
GATE_QUESTIONS = 10
GATE_MINIMUM = 3  # correct of 10; a first guess, see the module docstring
GATE_MEASURED = "0/10 cold start on 2026-12-07 (33 min, load average ~10); with the examples pool not yet"


def gate_items() -> list[EvalItem]:
    """The first 10 answerable questions of the report part in `rag-bot eval sql --split report --limit N`
    order (balanced over languages and categories), so an eval run scores exactly the gate's questions."""
    report = apply_split(load_jsonl(SET), "report", split_path(SET, REPO / "knowledge_base/eval/splits"))
    return [i for i in select_items(report, None, len(report) - 1) if i.gold is not None][:GATE_QUESTIONS]


def test_gate_questions_are_fixed_report_questions_in_both_languages() -> None:
    items = gate_items()
    assert len(items) == GATE_QUESTIONS
    assert {i.language for i in items} == {"en", "ru"}
    tuning = apply_split(load_jsonl(SET), "tuning", split_path(SET, REPO / "knowledge_base/eval/splits"))
    assert not {i.id for i in items} & {i.id for i in tuning}


@pytest.mark.llm
@pytest.mark.e2e
@pytest.mark.quality
def test_real_model_answers_enough_report_questions_cold(
    llamacpp_server: str, pg_admin_url: str, demo_db: DemoLoadReport, demo_admin_url: str, embedder: Embedder,
) -> None:
    store = demo_schema_store(pg_admin_url, demo_db, embedder, "t_gate_", domain=DEMO_TABLE_DOMAINS)
    sync_schema_notes(REPO / "knowledge_base/db/README.md", store, embedder, database="demo")
    # As the chat runs: the deployment's solved examples (none a near-copy of an evaluation question,
    # tests/test_eval_sql_items.py::test_demo_examples_pool_has_no_near_copy_of_an_evaluated_question),
    # never the evaluated set's own gold SQL.
    add_solved_examples_file(REPO / "knowledge_base/db/examples.yaml", store, embedder)
    llm = OpenAICompatClient(llamacpp_server, "ci-model", temperature=0.0, max_tokens=400, timeout_s=600)
    outcomes: list[tuple[str, str, bool]] = []
    try:
        with PostgresSqlRunner(demo_db.readonly_url, statement_timeout_ms=10000, row_cap=10000) as runner:
            for item in gate_items():
                answer = answer_analytics(item.question, llm=llm, store=store, embedder=embedder, runner=runner,
                                          language=item.language, today=item.today,
                                          options=AnalyticsOptions(narrate=False, max_rows=10000))
                correct, _ = score(item, answer.status, answer.rows, demo_admin_url)
                outcomes.append((item.id, answer.status, correct))
    finally:
        store.close()
    passed = sum(c for _, _, c in outcomes)
    print(f"quality gate: {passed}/{len(outcomes)} correct", outcomes)  # noqa: T201 - shown with -s, for calibrating
    assert passed >= GATE_MINIMUM, (f"{passed}/{len(outcomes)} correct, gate {GATE_MINIMUM} "
                                    f"(measured {GATE_MEASURED})", outcomes)
