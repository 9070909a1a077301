"""Prompt templates and user-facing texts (ru/en). Nothing else lives here."""

from __future__ import annotations

DOCS_SYSTEM = {
    "en": (
        "You are the assistant of TechnoSnab, a B2B distributor of office and IT equipment. "
        "Answer the user's question using ONLY the numbered context passages below. "
        "Cite the passages you used as [1], [2]. If the context does not contain the answer, say that "
        "you could not find it in the company documents; never invent facts. Answer in English, briefly."
    ),
    "ru": (
        "Ты — ассистент компании «ТехноСнаб», B2B-дистрибьютора офисной и IT-техники. "
        "Отвечай на вопрос пользователя, используя ТОЛЬКО пронумерованные фрагменты контекста ниже. "
        "Указывай использованные фрагменты как [1], [2]. Если в контексте нет ответа, скажи, что не нашёл "
        "этого в документах компании; ничего не выдумывай. Отвечай по-русски, кратко."
    ),
}

DOCS_USER = {
    "en": (
        "Context:\n{context}\n\nQuestion: {question}\n\n"
        "Answer in one to three full sentences that state the specific facts (numbers, days, names) "
        "from the context, then the source numbers, like: \"... 14 calendar days [1].\""
    ),
    "ru": (
        "Контекст:\n{context}\n\nВопрос: {question}\n\n"
        "Ответь одним-тремя полными предложениями с конкретными фактами (числа, сроки, названия) "
        "из контекста, затем номера источников, например: «... 14 календарных дней [1].»"
    ),
}

TEXTS = {
    "no_sources": {
        "en": "I could not find anything about this in the company documents available to you.",
        "ru": "Я не нашёл ничего об этом в доступных вам документах компании.",
    },
    "llm_down": {
        "en": "The language model is not available right now. Please try again in a minute.",
        "ru": "Языковая модель сейчас недоступна. Попробуйте ещё раз через минуту.",
    },
    "internal_error": {
        "en": "Something went wrong on our side. The error was logged; please try again.",
        "ru": "Что-то пошло не так на нашей стороне. Ошибка записана в журнал; попробуйте ещё раз.",
    },
    "sources": {"en": "Sources", "ru": "Источники"},
}


def text(key: str, language: str) -> str:
    """A user-facing text in the user's language (English when the language is unknown)."""
    variants = TEXTS[key]
    return variants.get(language, variants["en"])
