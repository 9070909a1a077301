"""The router's training material: the profile's descriptions and examples, plus an optional file of
generated example messages, and the rule that keeps evaluation messages out of both.

A generated file is JSON lines, one message each: `{"text": ..., "intent": ..., "domain": ...,
"language": ...}` (`domain` null for smalltalk/out_of_scope). It is written offline by
`knowledge_base/router/generate_examples.py` from the profile's domain descriptions, never from eval
messages, and `tests/test_router_material.py` refuses any training phrase that is a near-copy of an
eval message (`is_near_copy`).
"""

from __future__ import annotations

import difflib
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from rag_bot.errors import ConfigError
from rag_bot.profiles import INTENTS, Described

# Two texts are a near-copy when their normalised edit similarity (difflib ratio over lowercased
# words) reaches 0.8, i.e. at most about one changed word in five: a paraphrase that keeps the
# eval message's wording. Embedding similarity is checked beside it (NEAR_COPY_COSINE) to catch
# a reordered or translated copy.
NEAR_COPY_RATIO = 0.8
NEAR_COPY_COSINE = 0.95

_WORDS = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class TrainingExample:
    text: str
    intent: str
    domain: str | None
    language: str


def normalise(text: str) -> str:
    """Lowercased words joined by single spaces: punctuation and case never make a copy 'new'."""
    return " ".join(_WORDS.findall(text.lower().replace("ё", "е")))


def edit_similarity(a: str, b: str) -> float:
    """difflib's ratio (2 * matches / total length) of the normalised texts, 0..1."""
    return difflib.SequenceMatcher(None, normalise(a), normalise(b), autojunk=False).ratio()


def is_near_copy(a: str, b: str, cosine: float | None = None) -> bool:
    """True when `a` copies `b` by wording (edit similarity) or, given their embeddings' cosine, by meaning."""
    if edit_similarity(a, b) >= NEAR_COPY_RATIO:
        return True
    return cosine is not None and cosine >= NEAR_COPY_COSINE


def load_training_examples(path: Path, domains: set[str]) -> list[TrainingExample]:
    """Read a generated examples file; a bad line is an error naming the file, line and fix."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(
            f"Cannot read the router's training file {path}: {exc.strerror}. Fix `router.training_file` "
            "in the profiles file or remove the key."
        ) from exc
    examples = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            example = TrainingExample(
                str(item["text"]), str(item["intent"]), item.get("domain"), item.get("language", "")
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}:{number}: each line must be JSON with 'text' and 'intent' ({exc}).") from exc
        if example.intent not in INTENTS or (example.domain is not None and example.domain not in domains):
            raise ConfigError(f"{path}:{number}: unknown intent or domain ({example.intent}, {example.domain}).")
        examples.append(example)
    return examples


def with_examples(
    classes: dict[str, Described], extra: list[TrainingExample], key: str
) -> dict[str, Described]:
    """`classes` with the extra examples whose `key` ("intent" or "domain") names the class appended."""
    grouped: dict[str, list[str]] = defaultdict(list)
    for example in extra:
        label = getattr(example, key)
        if label in classes:
            grouped[label].append(example.text)
    return {
        name: described.model_copy(update={"examples": [*described.examples, *grouped.get(name, [])]})
        for name, described in classes.items()
    }


__all__ = [
    "NEAR_COPY_COSINE",
    "NEAR_COPY_RATIO",
    "TrainingExample",
    "edit_similarity",
    "is_near_copy",
    "load_training_examples",
    "normalise",
    "with_examples",
]
