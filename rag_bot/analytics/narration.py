"""Explain a query result in the user's language; every number in the text must come from the result.

The LLM writes one to three sentences from the result table. `numbers_supported` then checks each
number it wrote against the result cells (allowing rounding to the precision written), the question
and the row count, and `misattributed_numbers` checks that a number stated next to a row's label
("Delivery has 786 tickets") is a number of that row, not of another one. A sentence failing either
check is dropped; one regeneration; if that fails too, a templated sentence and the table.
"""

# ruff: noqa: E501  (prompt and message catalogue lines are kept whole)

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from rag_bot.llm.base import ChatMessage, LLMClient

logger = logging.getLogger(__name__)

MAX_ROWS_SHOWN = 20

_SYSTEM = {
    "en": "You explain database query results to a business user. Answer the question in English in one to "
    "three sentences, giving the key numbers exactly as they appear in the result (you may round). Do not "
    "compute new numbers (no sums, differences or percentages that are not in the result) and do not add currency "
    "signs or units the result does not show. No SQL, no preamble.",
    "ru": "Ты объясняешь результаты запроса к базе данных бизнес-пользователю. Ответь на вопрос по-русски "
    "в одном-трёх предложениях, приводя ключевые числа так, как они есть в результате (можно округлить). "
    "Не вычисляй новые числа (суммы, разницы, проценты, которых нет в результате) и не добавляй знаки валют "
    "и единицы, которых в результате нет. Без SQL и вступлений.",
}
_TEMPLATE = {
    "en": "Here is the result: {n} row(s).",
    "ru": "Вот результат: строк — {n}.",
}
_TEMPLATE_EMPTY = {
    "en": "The query returned no rows: there are no matching records.",
    "ru": "Запрос не вернул строк: подходящих записей нет.",
}
_TRUNCATED = {
    "en": " Only the first {n} rows are shown.",
    "ru": " Показаны только первые {n} строк.",
}

# 1 234 567,89 | 1,234,567.89 | 1234.5 | -3 | 12%
_NUMBER = re.compile(r"(?<![\w.])-?\d{1,3}(?:[ \u00a0\u202f,]\d{3})+(?:[.,]\d+)?(?!\w)|(?<![\w.])-?\d+(?:[.,]\d+)?(?!\w)")

# "1. Acme — 5 orders": the ordinal of a numbered list is not a figure from the result.
_LIST_MARKER = re.compile(r"^[ \t]*\d{1,2}[.)](?=[ \t])", re.MULTILINE)


def render_result(columns: Sequence[str], rows: Sequence[Sequence[Any]], limit: int = MAX_ROWS_SHOWN) -> str:
    lines = [" | ".join(columns)]
    for row in rows[:limit]:
        lines.append(" | ".join(_cell(v) for v in row))
    if len(rows) > limit:
        lines.append(f"... ({len(rows)} rows in total)")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return _number_cell(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return str(value)


def _number_cell(value: float | Decimal) -> str:
    """The number as the narrative should write it, digits already grouped.

    Shown a bare 699886081.40, the 1.5B model regrouped it as "69,988,608.10" (a lost digit); a
    grouped 699,886,081.40 it copies (bench/narration.py). Below 10,000 nothing is grouped, so a
    year stays 2024.
    """
    number = Decimal(f"{value:.4f}") if isinstance(value, float) else Decimal(value)
    if not number.is_finite():
        return str(value)
    whole, _, fraction = format(number, "f").partition(".")
    fraction = fraction.rstrip("0")
    if fraction and not isinstance(value, float):
        fraction = fraction.ljust(2, "0")  # money keeps its cents: 81.40, not 81.4
    if abs(number) >= 10_000:
        whole = f"{int(whole):,}"
    return f"{whole}.{fraction}" if fraction else whole


def _parse_number(token: str) -> tuple[Decimal, int] | None:
    """A number as written (either locale) and its decimal places."""
    text = token.replace("\u00a0", " ").replace("\u202f", " ")
    if re.fullmatch(r"-?\d{1,3}(?:[ ,]\d{3})+(?:[.,]\d+)?", text) and (" " in text or text.count(",") >= 1):
        # Thousands separators: a space, or commas followed by exactly three digits.
        if " " in text:
            text = text.replace(" ", "").replace(",", ".")
        elif re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", text):
            text = text.replace(",", "")
        else:
            text = text.replace(",", ".")
    else:
        text = text.replace(",", ".")
    try:
        value = Decimal(text)
    except ArithmeticError:
        return None
    places = len(text.split(".")[1]) if "." in text else 0
    return value, places


def _result_numbers(rows: Sequence[Sequence[Any]]) -> list[Decimal]:
    out: list[Decimal] = []
    for row in rows:
        for value in row:
            if isinstance(value, bool) or value is None:
                continue
            if isinstance(value, (int, float, Decimal)):
                out.append(Decimal(str(value)))
            elif isinstance(value, (date, datetime)):
                out.extend(Decimal(p) for p in (value.year, value.month, value.day))
            else:
                for token in _NUMBER.findall(str(value)):
                    parsed = _parse_number(token)
                    if parsed:
                        out.append(parsed[0])
    return out


def numbers_supported(text: str, rows: Sequence[Sequence[Any]], question: str = "") -> list[str]:
    """Numbers in `text` that match nothing in the result, the question or the row count (empty = ok).

    A written number matches a cell rounded or cut off to the written precision, also in thousands,
    millions or billions ("1.2 млн"). The ordinals of a numbered list ("4. Acme") are not figures.
    """
    return _unsupported(text, _allowed_numbers(rows, question))


def _allowed_numbers(rows: Sequence[Sequence[Any]], question: str) -> list[Decimal]:
    """What a figure may be: a result cell, a number of the question, the row count."""
    allowed = _result_numbers(rows) + [Decimal(len(rows))]
    for token in _NUMBER.findall(question):
        parsed = _parse_number(token)
        if parsed:
            allowed.append(parsed[0])
    return allowed


def _figures(text: str) -> list[str]:
    return _NUMBER.findall(_LIST_MARKER.sub("", text))


def _unsupported(text: str, allowed: Sequence[Decimal]) -> list[str]:
    unsupported = []
    for token in _figures(text):
        parsed = _parse_number(token)
        if parsed is None:
            continue
        value, places = parsed
        quantum = Decimal(1).scaleb(-places)
        if not any(_written_as(value, quantum, cell) for cell in allowed):
            unsupported.append(token)
    return unsupported


def _written_as(value: Decimal, quantum: Decimal, cell: Decimal) -> bool:
    """Whether `value`, written to `quantum`, can be `cell`: rounded or cut off ("73.8" / "73.7" for
    73,799,303 in millions), in units, thousands, millions or billions, or a share written in percent."""
    candidates = [cell / scale for scale in (1, 1000, 1_000_000, 1_000_000_000)]
    if abs(cell) <= 1:
        candidates.append(cell * 100)  # 0.125 written as 12.5 %
    for scaled in candidates:
        try:
            if value in (scaled.quantize(quantum, ROUND_HALF_UP), scaled.quantize(quantum, ROUND_DOWN)):
                return True
        except InvalidOperation:  # more digits written than the decimal context holds
            continue
    return False


_LABEL_MIN_LETTERS = 2
_MONTHS_EN = ("January|Jan", "February|Feb", "March|Mar", "April|Apr", "May", "June|Jun", "July|Jul",
              "August|Aug", "September|Sept?", "October|Oct", "November|Nov", "December|Dec")
_MONTHS_RU = ("январ", "феврал", "март", "апрел", "ма[йяе]", "июн", "июл", "август", "сентябр", "октябр",
              "ноябр", "декабр")


@dataclass(frozen=True)
class _Label:
    """A way a narrative names some rows: a text cell ("Delivery") or a month of a monthly date column."""

    key: str
    column: int
    pattern: re.Pattern[str]
    rows: frozenset[int]


def _row_labels(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[_Label]:
    """Every text cell that names a row ("Delivery", "Москва") and, for a column of first-of-month
    dates, each month by name ("January", "в марте") or ISO ("2025-03").

    Text patterns tolerate case and, for words of five letters or more, an inflected ending ("Москве",
    "Deliveries"), since the narrative is written in running text.
    """
    found: dict[tuple[str, int], tuple[re.Pattern[str], set[int]]] = {}
    for number, row in enumerate(rows):
        for index, value in enumerate(row[: len(columns)]):
            if not isinstance(value, str):
                continue
            label = value.strip()
            if sum(ch.isalpha() for ch in label) < _LABEL_MIN_LETTERS:
                continue
            key = (label.lower(), index)
            if key not in found:
                parts = [re.escape(w[:-2]) + r"\w{0,4}" if len(w) >= 5 and w[-1].isalpha() else re.escape(w)
                         for w in label.split()]
                found[key] = (re.compile(r"(?<!\w)" + r"\s+".join(parts) + r"(?!\w)", re.I), set())
            found[key][1].add(number)
    labels = [_Label(key, column, pattern, frozenset(numbers)) for (key, column), (pattern, numbers) in found.items()]
    for index in range(len(columns)):
        cells = [row[index] if index < len(row) else None for row in rows]
        dates = [d for d in cells if isinstance(d, date) and d.day == 1]
        if not dates or len(dates) != len(cells):  # a month column: every cell the 1st of a month
            continue
        for month in sorted({d.month for d in dates}):
            numbers = frozenset(n for n, d in enumerate(dates) if d.month == month)
            year = r"(?:,?\s+\d{4}(?!\d))?"  # "March 2025" is one label, its year no figure of its own
            en = re.compile(rf"(?<!\w)(?:{_MONTHS_EN[month - 1]})(?!\w){year}")  # case-sensitive: "may" is a verb
            ru = re.compile(rf"(?<!\w){_MONTHS_RU[month - 1]}\w*{year}", re.I)
            iso = re.compile(rf"(?<![\w-])\d{{4}}-{month:02d}(?:-01)?(?![\w-])")
            labels += [_Label(f"month {month} {kind}", index, pattern, numbers)
                       for kind, pattern in (("en", en), ("ru", ru), ("iso", iso))]
    return labels


def misattributed_numbers(text: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                          question: str = "") -> list[str]:
    """Numbers stated for a row label that are not that row's ("Delivery and billing each have 553").

    Per sentence: a number belongs to the labels named since the previous number (or, when none, to
    those named right after it). It must then be a value of a row holding each of those labels; labels of
    different columns ("Урал", "Enterprise") narrow the rows together. Numbers of the question and the row
    count are free, as are numbers inside a label and sentences naming no label.
    """
    labels = _row_labels(columns, rows)
    if not labels:
        return []
    free = _allowed_numbers([], question) + [Decimal(len(rows))]
    bad: list[str] = []
    for line in _LIST_MARKER.sub("", text).splitlines():
        for sentence in _SENTENCE_END.split(line):
            bad.extend(_misattributed_in(sentence, labels, rows, free))
    return bad


_Mention = tuple[int, int, _Label]


def _misattributed_in(sentence: str, labels: Sequence[_Label], rows: Sequence[Sequence[Any]],
                      free: Sequence[Decimal]) -> list[str]:
    mentions: list[_Mention] = []
    for label in sorted(labels, key=lambda item: -len(item.key)):
        for match in label.pattern.finditer(sentence):
            if not any(s < match.end() and match.start() < e for s, e, _ in mentions):
                mentions.append((match.start(), match.end(), label))
    if not mentions:
        return []
    mentions.sort(key=lambda m: m[0])
    numbers = [m for m in _NUMBER.finditer(sentence) if not any(s <= m.start() < e for s, e, _ in mentions)]
    # "Delivery has 786, billing 553" reads label-first, "786 were about Delivery, 553 about billing"
    # number-first: a number is flagged only when neither reading gives it to its own row.
    readings = [_attribute(sentence, numbers, mentions, rows, free, first) for first in ("label", "number")]
    return min(readings, key=len)


def _attribute(sentence: str, numbers: Sequence[re.Match[str]], mentions: Sequence[_Mention],
               rows: Sequence[Sequence[Any]], free: Sequence[Decimal], first: str) -> list[str]:
    bad = []
    for position, number in enumerate(numbers):
        before = numbers[position - 1].end() if position else 0
        after = numbers[position + 1].start() if position + 1 < len(numbers) else len(sentence)
        preceding = [m[2] for m in mentions if before <= m[0] < number.start()]
        following = [m[2] for m in mentions if number.end() <= m[0] < after]
        group = (preceding or following) if first == "label" else (following or preceding)
        parsed = _parse_number(number.group())
        if not group or parsed is None:
            continue
        value, places = parsed
        quantum = Decimal(1).scaleb(-places)
        if any(_written_as(value, quantum, cell) for cell in free):
            continue
        if not all(_row_has(value, quantum, label, group, rows) for label in group):
            bad.append(number.group())
    return bad


def _row_has(value: Decimal, quantum: Decimal, label: _Label, group: Sequence[_Label],
             rows: Sequence[Sequence[Any]]) -> bool:
    """Is `value` a number of a row named by `label`, narrowed by the group's labels of other columns?"""
    narrowed = set(label.rows)
    for column in {other.column for other in group if other.column != label.column}:
        narrowed &= set().union(*(other.rows for other in group if other.column == column))
    for number in sorted(narrowed or label.rows):
        if any(_written_as(value, quantum, cell) for cell in _result_numbers([rows[number]])):
            return True
    return False


def template_answer(row_count: int, language: str, truncated: bool = False) -> str:
    lang = "ru" if language == "ru" else "en"
    text = (_TEMPLATE_EMPTY if row_count == 0 else _TEMPLATE)[lang].format(n=row_count)
    if truncated:
        text += _TRUNCATED[lang].format(n=row_count)
    return text


_CURRENCY_SIGNS = "$€£¥₽"

# Sentence ends inside a line; "1. " and "2.5. " are not ends (a digit before the stop).
_SENTENCE_END = re.compile(r"(?<=[^\d\s][.!?])[ \t]+")


def _only_supported_sentences(text: str, allowed: Sequence[Decimal],
                              misattributed: Any = lambda sentence: []) -> str | None:
    """`text` without the sentences whose numbers are not allowed (or not their row's); None when no
    figure is left."""
    lines = []
    for line in text.splitlines():
        kept = [s for s in _SENTENCE_END.split(line) if not _unsupported(s, allowed) and not misattributed(s)]
        if kept:
            lines.append(" ".join(kept))
    result = "\n".join(lines).strip()
    # "… by category was as follows:" whose list was all dropped says nothing: ask again instead.
    return result if _figures(result) and not result.endswith(":") else None


def _without_invented_currency(text: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                               question: str) -> str:
    """Drop currency signs that neither the question nor the result shows: the 1.5B model writes "$"
    before any amount, and the demo company's amounts are roubles."""
    shown = " ".join([question, *columns, *(str(v) for row in rows for v in row if isinstance(v, str))])
    for sign in _CURRENCY_SIGNS:
        if sign in text and sign not in shown:
            text = text.replace(sign, "")
    return text


def narrate_result(
    question: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    llm: LLMClient,
    language: str,
    truncated: bool = False,
    max_attempts: int = 2,
) -> tuple[str, bool]:
    """(answer text, True when the LLM's narrative passed the number check; False = template used)."""
    if not rows:
        return template_answer(0, language), True
    lang = "ru" if language == "ru" else "en"
    messages = [
        ChatMessage("system", _SYSTEM[lang]),
        ChatMessage("user", f"Question: {question}\n\nResult:\n{render_result(columns, rows)}"),
    ]
    allowed = _allowed_numbers(rows, question)

    def misattributed(part: str) -> list[str]:
        return misattributed_numbers(part, columns, rows, question)

    for attempt in range(max_attempts):
        text = llm.complete(messages, max_tokens=200).text.strip()
        wrong_row = misattributed(text)
        bad = _unsupported(text, allowed) + wrong_row
        # A sentence with a figure of its own (a "total" it summed, often wrongly) or a figure of another
        # row is dropped; the sentences that only quote the result stay. Greedy decoding would repeat it
        # when asked again.
        answer = text if not bad else _only_supported_sentences(text, allowed, misattributed)
        if answer:
            answer = _without_invented_currency(answer, columns, rows, question)
            if bad:
                logger.info("narration: dropped the sentences with numbers not in the result: %s", bad)
            if truncated:
                answer += _TRUNCATED[lang].format(n=len(rows))
            return answer, True
        logger.info("narration attempt %d has numbers not in the result: %s", attempt + 1, bad)
        feedback = f"These numbers are not in the result: {', '.join(bad) or 'none'}. "
        if wrong_row:
            feedback = (f"These numbers are stated for a row they do not belong to: {', '.join(wrong_row)}. "
                        "Give each row's own number right after its name. ")
        messages = messages + [
            ChatMessage("assistant", text),
            ChatMessage("user", feedback + "Rewrite the answer using only numbers that appear in the result."),
        ]
    return template_answer(len(rows), language, truncated), False
