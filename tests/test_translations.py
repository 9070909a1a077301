"""The chat UI's Russian translation covers every key of Chainlit's English one."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from rag_bot.config import PROJECT_ROOT

TRANSLATIONS = PROJECT_ROOT / ".chainlit" / "translations"


def _leaves(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            yield from _leaves(value, path)
        else:
            yield path, value


def _load(name: str) -> dict[str, str]:
    return dict(_leaves(json.loads((TRANSLATIONS / name).read_text(encoding="utf-8"))))


def test_russian_translation_has_exactly_the_english_keys() -> None:
    english, russian = _load("en-US.json"), _load("ru-RU.json")
    assert sorted(set(english) - set(russian)) == []
    assert sorted(set(russian) - set(english)) == []


def test_russian_translation_is_translated_and_keeps_placeholders() -> None:
    english, russian = _load("en-US.json"), _load("ru-RU.json")
    placeholder = re.compile(r"\{\{\w+\}\}")
    for key, text in russian.items():
        assert isinstance(text, str) and text.strip(), key
        assert placeholder.findall(text) == placeholder.findall(english[key]), key
    # Shortcut keys stay as they are; everything with words is in Russian.
    cyrillic = [k for k, t in russian.items() if re.search(r"[а-яё]", t, re.I)]
    assert len(cyrillic) >= len(russian) - 2
