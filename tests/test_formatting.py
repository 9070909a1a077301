"""Result values as the chat's table and the API's rows_formatted show them."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest

from rag_bot.analytics.formatting import format_cell
from rag_bot.api.app import formatted_rows
from rag_bot.assistant.conversation import Route
from rag_bot.assistant.respond import Reply


@pytest.mark.parametrize(("value", "column", "language", "shown"), [
    (Decimal("382558448.90"), "revenue", "ru", "382\u00a0558\u00a0448,90"),
    (Decimal("382558448.90"), "revenue", "en", "382,558,448.90"),
    (786, "tickets", "ru", "786"),
    (5000, "tickets", "en", "5000"),  # four digits stay ungrouped
    (2024, "year", "en", "2024"),
    (1234567, "customer_id", "en", "1234567"),  # identifiers are not quantities
    (-15000.5, "delta", "en", "-15,000.50"),
    (0.12345, "share", "ru", "0,1235"),
    (datetime(2024, 1, 1), "month", "ru", "2024-01-01"),
    (date(2024, 2, 29), "day", "en", "2024-02-29"),
    (datetime(2024, 3, 5, 14, 30), "at", "en", "2024-03-05 14:30"),
    ("Урал", "region", "ru", "Урал"),
    (None, "revenue", "ru", None),
    (float("nan"), "revenue", "en", None),
])
def test_format_cell(value: object, column: str, language: str, shown: object) -> None:
    assert format_cell(value, column, language) == shown


def test_api_rows_formatted_follow_the_reply_language_and_keep_raw_rows_apart() -> None:
    route = Route(intent="sql", domains=("sales",), intent_confidence=1.0, domain_confidence=1.0, path="fast",
                  language="ru")
    reply = Reply(route=route, sql="SELECT 1", columns=["month", "revenue"],
                  rows=[(datetime(2024, 1, 1), Decimal("382558448.90"))])
    assert formatted_rows(reply) == [["2024-01-01", "382\u00a0558\u00a0448,90"]]
