"""Prompt templates and user-facing texts (ru/en), and which of the two languages a text is in.

Nothing else lives here.
"""

from __future__ import annotations

import re

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
        "from the context, each followed by its source number in brackets, like [1]."
    ),
    "ru": (
        "Контекст:\n{context}\n\nВопрос: {question}\n\n"
        "Ответь одним-тремя полными предложениями с конкретными фактами (числа, сроки, названия) "
        "из контекста; после каждого факта укажи номер источника в скобках, например [1]."
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
    "db_down": {
        "en": "The knowledge base is not available right now. Please try again in a minute.",
        "ru": "База знаний сейчас недоступна. Попробуйте ещё раз через минуту.",
    },
    "internal_error": {
        "en": "Something went wrong on our side. The error was logged; please try again.",
        "ru": "Что-то пошло не так на нашей стороне. Ошибка записана в журнал; попробуйте ещё раз.",
    },
    "sources": {"en": "Sources", "ru": "Источники"},
    "smalltalk": {
        "en": "Hello! I answer questions about TechnoSnab: policies and documents, and data questions "
        "(sales, orders, support tickets) with tables and charts. What would you like to know?",
        "ru": "Здравствуйте! Я отвечаю на вопросы о «ТехноСнабе»: по документам и регламентам, а также по "
        "данным (продажи, заказы, обращения) — с таблицами и графиками. Что вас интересует?",
    },
    # {topics}: the profile's domains (Router.topics), so the bot says what it can do instead.
    "out_of_scope": {
        "en": "Sorry, I can only help with TechnoSnab's {topics}: its documents, products and data. "
        "This question is outside what I know.",
        "ru": "Извините, я могу помочь только с вопросами «ТехноСнаба» по темам: {topics} — по документам, "
        "товарам и данным компании. Этот вопрос вне моей области.",
    },
    "not_permitted": {
        "en": "This assistant answers from the company's documents only; it cannot run data queries.",
        "ru": "Этот ассистент отвечает только по документам компании и не выполняет запросы к данным.",
    },
    "handover": {
        "en": "I have passed your conversation to a support specialist; they will contact you shortly.",
        "ru": "Я передал ваш диалог специалисту поддержки, он свяжется с вами в ближайшее время.",
    },
    "analytics_off": {
        "en": "Data questions are not available: no company database is connected.",
        "ru": "Вопросы по данным недоступны: база данных компании не подключена.",
    },
    "charts_off": {
        "en": "Charts are not available on this server.",
        "ru": "Графики на этом сервере недоступны.",
    },
    "bad_thread": {
        "en": "This conversation cannot be continued here. Please reload the page to start a new one.",
        "ru": "Этот разговор нельзя продолжить здесь. Обновите страницу, чтобы начать новый.",
    },
    "no_profile": {
        "en": "Your account has no assistant available. Please ask the administrator to grant you access.",
        "ru": "Для вашей учётной записи не открыт ни один ассистент. Попросите администратора выдать доступ.",
    },
}


def text(key: str, language: str) -> str:
    """A user-facing text in the user's language (English when the language is unknown)."""
    variants = TEXTS[key]
    return variants.get(language, variants["en"])


_CYRILLIC = re.compile("[\u0400-\u04ff]")
_LATIN = re.compile("[A-Za-z]")


def detect_language(text: str) -> str:
    """'ru' when Cyrillic letters outnumber Latin ones, else 'en' (the two languages the bot speaks)."""
    sample = text[:20000]
    cyrillic = len(_CYRILLIC.findall(sample))
    latin = len(_LATIN.findall(sample))
    return "ru" if cyrillic > latin else "en"
