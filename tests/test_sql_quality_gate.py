"""Quality gate: the real 1.5B model on 10 data questions of the demo set's REPORT part, scored with
`rag-bot eval sql`'s rules, with the deployment's own solved examples (knowledge_base/db/examples.yaml,
none a near-copy of an evaluated question) as the chat runs.

NOT in CI yet (marked `quality`), and GATE_MINIMUM is NOT calibrated. Measured on a quiet machine,
2026-12-08 (llama.cpp with its RAM prompt cache and --logits_all False; before them one run took 33 min
and the server was once OOM-killed): 0/10 correct in 7.6 min, then 0/10 in 5.9 min after the alias /
missing-join identifier repairs, with the queries that run and return rows up from 4/10 to 6/10. The
speed now fits a CI gate (~6 min); the accuracy does not give a minimum that both can fail and passes:
the wrong answers that run miss the business definitions (status filter, discount). Issue 19 stays
open on this. Run it on demand: `scripts/test.sh tests/test_sql_quality_gate.py -m quality -s`.
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
GATE_MEASURED = "0/10 with the examples pool on 2026-12-08 (5.9 min, quiet machine); 6/10 of the queries ran"


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
