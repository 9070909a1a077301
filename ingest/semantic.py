"""Topic-change splitting: llama-index's SemanticSplitterNodeParser driven by our Embedder.

The adapter is the only place that knows llama-index's embedding base class; the rest of the code
keeps using the Embedder seam (`rag_bot.embeddings`).

Why the vectors are centred for splitting: e5 vectors share one large common direction (every cosine
between two passages lies around 0.8-0.9), so the distance between two sentence groups barely moves
at a topic change. Subtracting the document's mean vector removes that shared part and leaves what
tells the topics apart. On a synthetic two-topic text (8 + 8 sentences) the raw vectors put the
largest distance at the boundary in 1 of 3 variants (en, ru, ru with varied wording); centred, in 3 of
3, by a clear margin.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.node_parser import SemanticSplitterNodeParser

from rag_bot.embeddings import Embedder

# The splitter embeds all sentence groups of one text in one `get_text_embedding_batch` call, which
# reaches the adapter in batches of this size (llama-index's maximum): centring sees the whole text,
# or 2048 consecutive sentence groups of a longer one.
_WHOLE_TEXT = 2048


class LlamaIndexEmbedding(BaseEmbedding):
    """Our Embedder as a llama-index `BaseEmbedding`: texts are passages, queries are queries (e5).

    With `centre=True`, each batch of texts is centred on its mean vector and renormalised (for
    comparing the parts of one text with each other, not for search).
    """

    centre: bool = Field(default=False, description="Subtract each batch's mean vector (splitting only).")
    _embedder: Embedder = PrivateAttr()

    def __init__(self, embedder: Embedder, **kwargs: Any) -> None:
        # The embedder batches (and sorts by length) internally, which is where its speed comes from;
        # llama-index's default of 10 texts per call would waste most of it.
        kwargs.setdefault("embed_batch_size", 256)
        super().__init__(model_name=embedder.name, **kwargs)
        self._embedder = embedder

    @classmethod
    def class_name(cls) -> str:
        return "RagBotEmbedding"

    def _get_query_embedding(self, query: str) -> list[float]:
        return [float(x) for x in self._embedder.embed_queries([query])[0]]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return [float(x) for x in self._embedder.embed_passages([text])[0]]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        vectors = np.asarray(self._embedder.embed_passages(texts), dtype=np.float32)
        if self.centre and len(vectors) > 1:
            centred = vectors - vectors.mean(axis=0)
            norms = np.linalg.norm(centred, axis=1, keepdims=True)
            # Identical texts (two sentences make two identical groups) centre to zero: nothing to compare.
            if norms.min() > 1e-6:
                vectors = centred / norms
        lists: list[list[float]] = vectors.tolist()
        return lists


def semantic_splitter(embedder: Embedder, percentile: int = 95, buffer_size: int = 1) -> SemanticSplitterNodeParser:
    """A splitter that breaks text where consecutive sentence groups (a sentence and `buffer_size`
    neighbours on each side) are further apart than `percentile` of all such distances in that text."""
    return SemanticSplitterNodeParser.from_defaults(
        embed_model=LlamaIndexEmbedding(embedder, centre=True, embed_batch_size=_WHOLE_TEXT),
        breakpoint_percentile_threshold=percentile,
        buffer_size=buffer_size,
        include_metadata=False,
        include_prev_next_rel=False,
    )
