"""The narration's number check: every figure in the text must come from the result (issue 6, step 7)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from rag_bot.analytics.narration import misattributed_numbers, narrate_result, numbers_supported, render_result
from rag_bot.llm.fake import FakeLLM

TOP5 = [("АО «ТД Бриз-Медиа»", Decimal("73799303.00")), ("АО «Импульс-Медиа»", Decimal("59577572.00")),
        ("АО «ТД Фарватер-Энерго»", Decimal("59237713.50")), ("АО «Лидер-Агро»", Decimal("53371119.00")),
        ("АО «Луч-Девелопмент»", Decimal("50054629.00"))]

# What Qwen2.5-Coder-1.5B wrote for "top 5 customers by revenue in 2024" (the check used to reject its "4.").
NUMBERED_LIST = """The top 5 customers by revenue in 2024 are:
1. АО «ТД Бриз-Медиа» with a revenue of 73,799,303.
2. АО «Импульс-Медиа» with a revenue of 59,577,572.
3. АО «ТД Фарватер-Энерго» with a revenue of 59,237,713.50.
4. АО «Лидер-Агро» with a revenue of 53,371,119.
5. АО «Луч-Девелопмент» with a revenue of 50,054,629."""


def test_a_numbered_list_of_result_figures_passes() -> None:
    assert numbers_supported(NUMBERED_LIST, TOP5, "top 5 customers by revenue in 2024") == []


def test_a_wrong_figure_inside_a_numbered_list_is_caught() -> None:
    text = NUMBERED_LIST.replace("53,371,119", "53,371,911")
    assert numbers_supported(text, TOP5, "top 5 customers by revenue in 2024") == ["53,371,911"]


@pytest.mark.parametrize("text", [
    "The leader is at 73.8 million.",        # rounded, in millions
    "The leader is at 73.7 million.",        # cut off, in millions
    "Лидер — 73,8 млн, второй — 59 577 572,00.",
    "The leader is at 73799303.",
    "Five customers, led by 73,799 thousand.",
])
def test_figures_written_rounded_or_scaled_pass(text: str) -> None:
    assert numbers_supported(text, TOP5) == []


@pytest.mark.parametrize("text, bad", [
    ("The leader is at 80.1 million.", ["80.1"]),
    ("Revenue grew 1 time over the year.", ["1"]),  # not 73,799,303 in billions "rounded" to 1
    ("The leader is at 73.9 million.", ["73.9"]),
    ("Together they made 296,040,336.50.", ["296,040,336.50"]),  # a sum the result does not hold
])
def test_figures_not_in_the_result_are_reported(text: str, bad: list[str]) -> None:
    assert numbers_supported(text, TOP5) == bad


def test_shares_may_be_written_in_percent_and_dates_by_their_parts() -> None:
    rows = [(date(2025, 3, 1), Decimal("0.125"))]
    assert numbers_supported("On 1 March 2025 the rate was 12.5 % (13 % rounded).", rows) == []
    assert numbers_supported("The rate was 14 %.", rows) == ["14"]


def test_numbers_from_the_question_and_the_row_count_are_allowed() -> None:
    assert numbers_supported("In 2024 there are 5 customers above 50 million.", TOP5,
                             "top 5 customers by revenue in 2024") == []


def test_narration_with_an_invented_number_is_regenerated_once() -> None:
    llm = FakeLLM(["The top customer made 99 million.", "The top customer made 73.8 million."])
    text, checked = narrate_result("top 5 customers by revenue in 2024", ["customer", "revenue"], TOP5,
                                   llm=llm, language="en")
    assert (text, checked) == ("The top customer made 73.8 million.", True)
    assert "These numbers are not in the result: 99" in llm.received[1][-1].content


def test_narration_that_keeps_inventing_falls_back_to_the_table_sentence() -> None:
    llm = FakeLLM(["Revenue was 3 billion.", "Revenue was 4 billion."])
    text, checked = narrate_result("Выручка за 2024 год", ["revenue"], [(Decimal("73799303.00"),)],
                                   llm=llm, language="ru")
    assert (text, checked) == ("Вот результат: строк — 1.", False)
    assert len(llm.received) == 2


def test_an_empty_result_is_said_without_asking_the_llm() -> None:
    llm = FakeLLM()
    assert narrate_result("orders on Sunday", ["n"], [], llm=llm, language="en") == (
        "The query returned no rows: there are no matching records.", True)
    assert llm.received == []


REGIONS = [("Центр", Decimal("499373664.50")), ("Северо-Запад", Decimal("253124025.20")),
           ("Урал", Decimal("192189473.60"))]


def test_a_sentence_with_a_figure_of_its_own_is_dropped_and_the_rest_kept() -> None:
    """What the 1.5B model wrote for "Выручка по регионам за прошлый квартал": a correct list, then a
    "total" it summed itself (and wrongly). Asked again at temperature 0 it wrote the same text."""
    reply = ("В прошлом квартале выручка по регионам была следующей:\n\n1. Центр: 499373664.50\n"
             "2. Северо-Запад: 253124025.20\n3. Урал: 192189473.60\n\n"
             "Общая выручка по регионам составила 1,94 billion рублей. Лидер — Центр.")
    llm = FakeLLM([reply])
    text, checked = narrate_result("Выручка по регионам за прошлый квартал", ["region", "revenue"], REGIONS,
                                   llm=llm, language="ru")
    assert checked and len(llm.received) == 1
    assert text == ("В прошлом квартале выручка по регионам была следующей:\n\n1. Центр: 499373664.50\n"
                    "2. Северо-Запад: 253124025.20\n3. Урал: 192189473.60\n\nЛидер — Центр.")
    assert numbers_supported(text, REGIONS) == []


def test_a_narrative_left_without_figures_is_regenerated() -> None:
    llm = FakeLLM(["Центр лидирует. Всего 1,94 млрд.", "Центр лидирует с 499,4 млн."])
    text, checked = narrate_result("Выручка по регионам", ["region", "revenue"], REGIONS, llm=llm, language="ru")
    assert (text, checked) == ("Центр лидирует с 499,4 млн.", True)
    assert len(llm.received) == 2


def test_a_currency_sign_neither_the_question_nor_the_result_shows_is_dropped() -> None:
    llm = FakeLLM(["The top customer is АО «ТД Бриз-Медиа» with a revenue of $73,799,303."])
    text, checked = narrate_result("top 5 customers by revenue in 2024", ["customer", "revenue"], TOP5,
                                   llm=llm, language="en")
    assert (text, checked) == ("The top customer is АО «ТД Бриз-Медиа» with a revenue of 73,799,303.", True)


def test_a_currency_sign_the_question_uses_is_kept() -> None:
    llm = FakeLLM(["Revenue was $73.8 million."])
    assert narrate_result("revenue in $ in 2024", ["revenue"], TOP5[:1], llm=llm, language="en") == (
        "Revenue was $73.8 million.", True)


def test_the_prompt_shows_large_numbers_grouped_and_years_as_they_are() -> None:
    """The 1.5B model regrouped a bare 699886081.40 as "69,988,608.10"; it is shown grouped."""
    rows = [(2024, Decimal("699886081.40"), Decimal("1147559678.60000"), 0.12345, -15000, Decimal("12.5"))]
    assert render_result(["year", "revenue", "total", "share", "delta", "price"], rows).splitlines()[1] == (
        "2024 | 699,886,081.40 | 1,147,559,678.60 | 0.1235 | -15,000 | 12.50")


def test_every_grouped_prompt_figure_passes_the_number_check() -> None:
    """What the model copies from the prompt must be accepted by the check."""
    rows = [(Decimal("699886081.40"), 1391136426, 0.5, Decimal("-1234567.00"))]
    assert numbers_supported(render_result(["a", "b", "c", "d"], rows).splitlines()[1], rows) == []


def test_a_lead_in_whose_whole_list_was_dropped_is_regenerated() -> None:
    """The model invented "Category A: 15.3%" lines; only "… was as follows:" would have been left."""
    invented = "In 2024 the margin by category was as follows:\n- Category A: 15.3%\n- Category B: 18.7%"
    llm = FakeLLM([invented, invented])
    text, checked = narrate_result("gross margin by category in 2024", ["category", "margin"],
                                   [("Laptops", Decimal("0.21"))], llm=llm, language="en")
    assert (text, checked) == ("Here is the result: 1 row(s).", False)
    assert len(llm.received) == 2


TICKETS = [("Delivery", 786), ("Billing", 553), ("Warranty", 120)]


@pytest.mark.parametrize(("text", "bad"), [
    ("Delivery and billing each have 553 tickets.", ["553"]),  # the stored chat's narration
    ("Delivery has 553 tickets, billing 786.", ["786"]),
    ("Delivery has 786 tickets and billing 553.", []),
    ("786 tickets were about Delivery, 553 about Billing.", []),  # number first, then its label
    ("1. Delivery — 786\n2. Billing — 553\n3. Warranty — 120", []),
    ("There are 3 categories; Delivery leads with 786 tickets.", []),  # the row count is free
    ("Most tickets are about deliveries.", []),
])
def test_numbers_stated_next_to_another_rows_label_are_misattributed(text: str, bad: list[str]) -> None:
    assert numbers_supported(text, TICKETS) == []  # every figure exists somewhere in the result
    assert misattributed_numbers(text, ["category", "tickets"], TICKETS) == bad


def test_labels_of_two_columns_narrow_the_row_and_russian_endings_match() -> None:
    rows = [("Москва", "Enterprise", 100), ("Москва", "SMB", 50), ("Урал", "Enterprise", 70)]
    columns = ["region", "segment", "orders"]
    assert misattributed_numbers("В Москве у Enterprise 100 заказов, а на Урале 70.", columns, rows) == []
    assert misattributed_numbers("В Москве у Enterprise 70 заказов.", columns, rows) == ["70"]


def test_months_of_a_monthly_column_are_labels_with_their_year() -> None:
    rows = [(date(2025, 1, 1), None), (date(2025, 2, 1), Decimal("1.4")), (date(2025, 3, 1), Decimal("26.5"))]
    columns = ["month", "growth_pct"]
    # bench/results/narration.json, sql-016: the growth of February stated for January.
    assert misattributed_numbers("Growth in 2025 was 1.40% for January, 26.50% for March.", columns, rows,
                                 "month-over-month growth in 2025") == ["1.40"]
    assert misattributed_numbers("В феврале 2025 рост 1,4%, в марте 26,5%.", columns, rows) == []
    assert misattributed_numbers("In May we may see 26.5.", columns, rows) == []  # no May row, "may" a verb


def test_a_sentence_giving_a_number_to_the_wrong_row_is_dropped() -> None:
    llm = FakeLLM(["Delivery has 786 tickets. Delivery and billing each have 553 tickets."])
    text, checked = narrate_result("tickets by category", ["category", "tickets"], TICKETS, llm=llm,
                                   language="en")
    assert (text, checked) == ("Delivery has 786 tickets.", True)


def test_a_narrative_with_only_misattributed_numbers_is_regenerated_with_the_reason() -> None:
    llm = FakeLLM(["Billing has 786 tickets.", "Delivery has 786 tickets."])
    text, checked = narrate_result("tickets by category", ["category", "tickets"], TICKETS, llm=llm,
                                   language="en")
    assert (text, checked) == ("Delivery has 786 tickets.", True)
    assert "stated for a row they do not belong to: 786" in llm.received[1][-1].content
