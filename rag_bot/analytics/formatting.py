"""Result values as people read them in a table: grouped digits, dates as dates, in the user's language.

The chat's table and the API's `rows_formatted` show the same text; the API's `rows` keep the raw
JSON values for programs. Python's format spec does the grouping; Russian swaps the separators
(`382 558 448,90`, a no-break space so a number never wraps), English keeps `382,558,448.90`.
Numbers below 10 000 are not grouped (Russian typography does not group four digits, and a year
stays `2024`), nor are identifiers, codes and years in columns named so.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime, time
from decimal import Decimal

GROUP_FROM = 10_000
_NOT_A_QUANTITY = re.compile(r"(^|_)(id|year|код|год|code|номер|number|inn|инн|phone|телефон|zip)($|_)|_id$", re.I)


def format_number(value: float | int | Decimal, language: str, *, group: bool = True) -> str:
    """`382558448.9` -> '382 558 448,90' (ru) / '382,558,448.90' (en)."""
    if isinstance(value, Decimal):
        exponent = value.as_tuple().exponent
        decimals = min(-exponent, 4) if isinstance(exponent, int) and exponent < 0 else 0
        number = float(value)
    elif isinstance(value, int):
        decimals, number = 0, float(value)
    else:
        number = value
        decimals = 0 if number.is_integer() else (2 if abs(number) >= 1 else 4)
    grouping = "," if group and abs(number) >= GROUP_FROM else ""
    text = f"{number:{grouping}.{decimals}f}" if not isinstance(value, int) else f"{value:{grouping}d}"
    if language == "ru":
        text = text.replace(",", "\u00a0").replace(".", ",")
    return text


def format_cell(value: object, column: str, language: str) -> object:
    """One result value for display: numbers and dates become text, None stays empty, others as given."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, datetime):
        if value.time() == time() and value.tzinfo is None:
            return value.date().isoformat()
        return value.strftime("%Y-%m-%d %H:%M:%S" if value.second else "%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, time):
        return value.strftime("%H:%M:%S" if value.second else "%H:%M")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Decimal) and not value.is_finite():
        return None
    if isinstance(value, int | float | Decimal):
        return format_number(value, language, group=not _NOT_A_QUANTITY.search(column))
    return value
