"""`rag-bot export finetune`: rated answers from the chat history tables as chat-format JSONL."""

# ruff: noqa: F811  (pytest fixtures imported by name from chat_fixtures)

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from chat_fixtures import SCHEMA, chat_db, run, store_rated_thread  # noqa: F401
from click.testing import CliRunner

from rag_bot.config import get_settings
from rag_bot.ui.chat_history import AnswerMeta
from rag_bot.ui.data_layer import ChatDataLayer
from rag_bot.ui.export import export_cli, export_finetune


def _docs(question: str, answer: str) -> AnswerMeta:
    prompt = [{"role": "system", "content": "Answer from the numbered context only."},
              {"role": "user", "content": f"Context:\n[1] {answer}\n\nQuestion: {question}"}]
    return AnswerMeta(question=question, profile="support", intent="docs", domains=["support"], language="en",
                      answer=answer, prompt=prompt)


@pytest.fixture
def rated_history(chat_db: str) -> str:
    """Four threads: liked docs answers, a disliked one, a liked data answer, a liked fixed reply."""
    liked = [_docs(f"Question {i}?", f"Answer {i} [1].") for i in range(6)]
    disliked = _docs("What is the return period?", "Thirty days [1].")
    data = AnswerMeta(question="Revenue by region?", profile="analyst", intent="sql", language="en",
                      answer="Centre: 10M", sql="SELECT 1", sql_ok=True)
    canned = AnswerMeta(question="Hello", profile="support", intent="smalltalk", language="en", answer="")

    async def scenario() -> None:
        layer = ChatDataLayer(chat_db, schema=SCHEMA)
        try:
            await store_rated_thread(layer, "olga", [(m.question, m, 1) for m in liked[:3]])
            await store_rated_thread(layer, "ivan", [(m.question, m, 1) for m in liked[3:]])
            unrated = _docs("u", "u")
            await store_rated_thread(layer, "olga", [(disliked.question, disliked, 0), ("u", unrated, None)])
            await store_rated_thread(layer, "anna", [(data.question, data, 1), (canned.question, canned, 1)])
        finally:
            await layer.close()

    run(scenario)
    return chat_db


def _read(path: Path) -> list[dict[str, list[dict[str, str]]]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_export_writes_chat_format_examples_of_liked_answers(rated_history: str, tmp_path: Path) -> None:
    with psycopg.connect(rated_history) as conn:
        report = export_finetune(conn, SCHEMA, tmp_path, min_rating=1, validation_share=0.2, seed=7)
    train, validation = _read(tmp_path / "train.jsonl"), _read(tmp_path / "validation.jsonl")
    assert (report.rated, report.train, report.validation) == (8, len(train), len(validation))
    assert len(train) + len(validation) == 6 and len(validation) == 3  # one whole thread of three
    for example in train + validation:
        roles = [m["role"] for m in example["messages"]]
        assert roles == ["system", "user", "assistant"]
        assert example["messages"][2]["content"].startswith("Answer ")
        assert "Context:" in example["messages"][1]["content"]
    assert sum(report.skipped.values()) == 2
    assert any("data answer" in reason for reason in report.skipped)


def test_export_with_min_rating_zero_includes_disliked_answers(rated_history: str, tmp_path: Path) -> None:
    with psycopg.connect(rated_history) as conn:
        report = export_finetune(conn, SCHEMA, tmp_path, min_rating=0, validation_share=0.0)
    answers = [e["messages"][2]["content"] for e in _read(tmp_path / "train.jsonl")]
    assert report.validation == 0 and len(answers) == 7 and "Thirty days [1]." in answers
    assert "u" not in answers  # unrated answers are never exported


def test_export_split_is_deterministic_for_a_seed(rated_history: str, tmp_path: Path) -> None:
    outputs = []
    for attempt in ("a", "b"):
        with psycopg.connect(rated_history) as conn:
            export_finetune(conn, SCHEMA, tmp_path / attempt, validation_share=0.3, seed=3)
        outputs.append([(tmp_path / attempt / name).read_text(encoding="utf-8")
                        for name in ("train.jsonl", "validation.jsonl")])
    assert outputs[0] == outputs[1]


def test_export_without_chat_history_writes_empty_files(fresh_db_url: str, tmp_path: Path) -> None:
    with psycopg.connect(fresh_db_url) as conn:
        report = export_finetune(conn, SCHEMA, tmp_path)
    assert report.rated == 0
    assert (tmp_path / "train.jsonl").read_text() == "" and (tmp_path / "validation.jsonl").read_text() == ""


@pytest.fixture
def settings_on(rated_history: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("RAG_BOT_DATABASE_URL", rated_history)
    get_settings.cache_clear()
    yield rated_history
    get_settings.cache_clear()


def test_export_finetune_command_reports_counts(settings_on: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(export_cli, ["finetune", "--min-rating", "1", "--out", str(tmp_path / "ft")])
    assert result.exit_code == 0, result.output
    assert "8 rated answers: wrote" in result.output and "skipped 1: data answer" in result.output
    lines = (tmp_path / "ft" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    lines += (tmp_path / "ft" / "validation.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 6
