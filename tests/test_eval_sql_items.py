"""`rag-bot eval sql`'s inputs: committed tuning/report splits, language-balanced subsets, the example
pool's near-copy check, and the summary table (no database, no LLM)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from rag_bot.evaluation.sql import sql as sql_command
from rag_bot.evaluation.sql_items import (
    EvalItem,
    SolvedExample,
    apply_split,
    load_examples,
    load_jsonl,
    make_split,
    near_copies,
    select_items,
    split_path,
)
from rag_bot.evaluation.sql_scoring import ItemResult, render_table, summarise

REPO = Path(__file__).resolve().parent.parent
DEMO_SET = REPO / "knowledge_base/eval/sql_qa.jsonl"


def _items() -> list[EvalItem]:
    return [EvalItem(id=f"{db}-{lang}-{cat}-{n}", question=f"q {n}", database=db, category=cat, gold="SELECT 1",
                     language=lang)
            for db in ("academic", "yelp") for lang in ("en", "ru") for cat in ("join", "ratio") for n in range(3)]


def test_split_halves_every_database_category_and_language_and_is_reproducible() -> None:
    items = _items()
    split = make_split(items)
    assert split == make_split(items)
    assert sorted(split["tuning"] + split["report"]) == sorted(i.id for i in items)
    report = [i for i in items if i.id in set(split["report"])]
    for db in ("academic", "yelp"):
        for lang in ("en", "ru"):
            assert 2 <= sum(i.database == db and i.language == lang for i in report) <= 4


def test_committed_demo_split_covers_the_set_and_keeps_parts_apart() -> None:
    items = load_jsonl(DEMO_SET)
    tuning = apply_split(items, "tuning", split_path(DEMO_SET, REPO / "knowledge_base/eval/splits"))
    report = apply_split(items, "report", split_path(DEMO_SET, REPO / "knowledge_base/eval/splits"))
    assert len(tuning) + len(report) == len(items) and not {i.id for i in tuning} & {i.id for i in report}
    assert {i.language for i in report} == {"en", "ru"}


def test_a_split_file_missing_new_questions_is_an_error_that_says_what_to_do(tmp_path: Path) -> None:
    items = _items()
    split_file = tmp_path / "set.json"
    split_file.write_text('{"tuning": [], "report": []}', encoding="utf-8")
    with pytest.raises(ValueError, match="rag-bot eval sql-split"):
        apply_split(items, "report", split_file)
    with pytest.raises(FileNotFoundError, match="--split all"):
        apply_split(items, "report", tmp_path / "none.json")


def test_limit_balances_languages_within_each_database() -> None:
    picked = select_items(_items(), None, 8)
    assert sorted((i.database, i.language) for i in picked) == sorted(
        [(db, lang) for db in ("academic", "yelp") for lang in ("en", "ru")] * 2)


def test_demo_examples_pool_has_no_near_copy_of_an_evaluated_question() -> None:
    pool = load_examples(REPO / "knowledge_base/db/examples.yaml")
    assert len(pool) >= 10
    assert near_copies(load_jsonl(DEMO_SET), pool) == {}


def test_near_copies_are_found_by_question_or_by_sql() -> None:
    item = EvalItem(id="x", question="Revenue by region in 2024", database="demo", category="c",
                    gold="SELECT r.name, sum(o.total) FROM orders o JOIN regions r ON r.id = o.region_id GROUP BY 1")
    by_sql = SolvedExample("Sales per area", item.gold.replace("sum", "SUM") + " ")  # type: ignore[union-attr]
    by_question = SolvedExample("revenue by region in 2024?", "SELECT 1")
    other = SolvedExample("Tickets by channel", "SELECT channel, count(*) FROM tickets GROUP BY 1")
    assert near_copies([item], [by_sql])["x"]["by"] == "sql"
    assert near_copies([item], [by_question])["x"]["by"] == "question"
    assert near_copies([item], [other]) == {}


def test_eval_refuses_examples_without_a_separate_pool() -> None:
    result = CliRunner().invoke(sql_command, ["--jsonl", str(DEMO_SET), "--examples", "3"])
    assert result.exit_code != 0 and "--examples-file" in result.output


def test_summary_reports_fails_to_run_false_not_there_and_latency_per_language() -> None:
    rows = [ItemResult(id="a", database="d", category="c", question="q", status="ok", correct=True, gold="g",
                       seconds=2.0, language="en", timings={"generate": 1.5}),
            ItemResult(id="b", database="d", category="c", question="q", status="error", correct=False, gold="g",
                       seconds=6.0, language="ru", timings={"generate": 5.0}),
            ItemResult(id="c", database="d", category="c", question="q", status="clarify", correct=False, gold="g",
                       seconds=1.0, language="ru")]
    summary = summarise(rows)
    overall = summary["overall"]
    assert overall["accuracy"] == pytest.approx(1 / 3, abs=0.001) and overall["error_rate"] == pytest.approx(0.333)
    assert overall["false_clarify_rate"] == pytest.approx(0.333)
    assert summary["per_language"]["ru"]["accuracy"] == 0.0 and summary["stage_p50_seconds"]["generate"] > 1.5
    assert "fail" in render_table({"rag_bot": summary})
