"""Language of a text, for answering in the user's language and tagging documents."""

from __future__ import annotations


def detect_language(text: str) -> str:
    """'ru' when Cyrillic letters outnumber Latin ones, else 'en' (the two languages the bot speaks)."""
    sample = text[:20000]
    cyrillic = sum(1 for ch in sample if "\u0400" <= ch <= "\u04ff")
    latin = sum(1 for ch in sample if ch.isascii() and ch.isalpha())
    return "ru" if cyrillic > latin else "en"
