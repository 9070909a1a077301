"""`rag-bot eval docs`: SQuAD loading and cross-lingual alignment, metrics, a real run on Postgres."""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rag_bot.config import Settings
from rag_bot.documents.retrieval import RetrievalOptions
from rag_bot.evaluation.docs import (
    Question,
    fresh_store,
    index_passages,
    llamaindex_baseline,
    load_squad,
    ours,
    run_retrieval,
)


class HashingEmbedder:
    name = "hashing-test"
    dim = 128

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[row, zlib.crc32(word.encode()) % self.dim] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    embed_passages = embed_queries = _embed


def _squad(path: Path, paragraphs: list[list[tuple[str, str, str]]]) -> Path:
    """paragraphs[article] = [(context, question id, question)]"""
    data = {
        "data": [
            {
                "title": f"Article {a}",
                "paragraphs": [
                    {"context": ctx, "qas": [{"id": qid, "question": q, "answers": []}]} for ctx, qid, q in article
                ],
            }
            for a, article in enumerate(paragraphs)
        ]
    }
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def test_squad_questions_map_to_the_other_corpus_by_question_id(tmp_path: Path) -> None:
    en = _squad(tmp_path / "en.json", [[("Cats purr.", "q1", "Do cats purr?")], [("Dogs bark.", "q2", "Bark?")]])
    ru = _squad(
        tmp_path / "ru.json", [[("Кошки мурлычут.", "q1", "Мурлычут ли кошки?")], [("Собаки лают.", "q2", "Лают?")]]
    )
    passages, questions = load_squad(ru, en)
    assert [p.text for p in passages] == ["Cats purr.", "Dogs bark."]
    assert [(q.text, q.language, set(q.gold)) for q in questions] == [
        ("Мурлычут ли кошки?", "ru", {"0:0"}),
        ("Лают?", "ru", {"1:0"}),
    ]


def test_recall_and_mrr_count_the_first_hit_rank() -> None:
    questions = [
        Question("a", "q", "en", frozenset({"x"})),
        Question("b", "q", "ru", frozenset({"y"})),
        Question("c", "q", "en", frozenset({"z"})),
    ]
    answers = {"a": ["x", "n"], "b": ["n", "y"], "c": ["n", "n"]}
    result = run_retrieval("t", questions, lambda q, k: [(key, "public") for key in answers[q.id]], [1, 2])
    assert result["metrics"]["all"] == {"n": 3, "recall@1": 1 / 3, "recall@2": 2 / 3, "mrr": 0.5}
    assert result["metrics"]["ru"]["recall@2"] == 1.0


def test_refusal_item_is_a_hit_only_when_nothing_internal_comes_back() -> None:
    q = Question("r", "salary?", "en", frozenset({"hr.md"}), audience="public", refuse=True)
    leaked = run_retrieval("t", [q], lambda q, k: [("hr.md", "internal")], [1])
    clean = run_retrieval("t", [q], lambda q, k: [("faq.md", "public")], [1])
    assert leaked["metrics"]["all"]["recall@1"] == 0.0 and clean["metrics"]["all"]["recall@1"] == 1.0


def test_squad_run_on_a_fresh_database_and_the_llamaindex_baseline(tmp_path: Path, pg_admin_url: str) -> None:
    squad = _squad(
        tmp_path / "s.json",
        [
            [
                ("The Denver Broncos won the Super Bowl in 2016.", "q1", "Who won the Super Bowl in 2016?"),
                ("Photosynthesis turns light into chemical energy.", "q2", "What does photosynthesis turn light into?"),
            ],
            [
                (
                    "The Rhine flows through Switzerland and Germany.",
                    "q3",
                    "Which countries does the Rhine flow through?",
                )
            ],
        ],
    )
    passages, questions = load_squad(squad)
    embedder = HashingEmbedder()
    with fresh_store(Settings(), embedder, admin_url=pg_admin_url) as store:
        index_passages(store, embedder, passages)
        result = run_retrieval("ours", questions, ours(store, embedder, RetrievalOptions()), [1, 3])
    baseline = run_retrieval("base", questions, llamaindex_baseline(passages, embedder), [1, 3])
    assert result["metrics"]["all"]["recall@1"] == 1.0
    assert baseline["metrics"]["all"]["recall@3"] == 1.0
