"""The charts' house style (sandbox/house_style.py) on real matplotlib figures, in this process."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from collections.abc import Iterator  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from sandbox.house_style import HOUSE_RC, apply_house_style, finish_figure, group_digits, measure  # noqa: E402

MONTHS = [f"2024-{m:02d}-01" for m in range(1, 13)]
REVENUE = [382558448.90 + m * 1.1e7 for m in range(12)]


@pytest.fixture(autouse=True)
def house_style() -> Iterator[None]:
    with matplotlib.rc_context():
        apply_house_style()
        yield
    plt.close("all")


def test_group_digits_uses_no_break_spaces_and_a_real_minus() -> None:
    assert group_digits(382558448.9, 0) == "382\u00a0558\u00a0449"
    assert group_digits(-1234.5, 1) == "\u22121\u00a0234.5"
    assert group_digits(12.0, 0) == "12"


def test_monthly_text_dates_overlap_as_drawn_and_not_after_the_house_style() -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(MONTHS, REVENUE, marker="o")  # dates as text: a categorical axis with 12 long labels

    shown, overlapping = measure(fig)
    assert shown >= 12 and overlapping > 0  # the check sees the problem the stored screenshots showed

    report = finish_figure(fig)

    assert report["overlapping_tick_labels_before"] == overlapping
    assert report["overlapping_tick_labels"] == 0
    assert measure(fig)[1] == 0
    x_labels = [t.get_text() for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
    assert x_labels and all(len(label) == 7 and label.startswith("2024-") for label in x_labels), x_labels
    y_labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert any("\u00a0000\u00a0000" in label for label in y_labels), y_labels
    assert ax.yaxis.get_offset_text().get_text() == ""  # no "1e8" above the axis


def test_real_dates_get_concise_labels_without_overlap() -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(pd.to_datetime(MONTHS), REVENUE)

    report = finish_figure(fig)

    assert report["overlapping_tick_labels"] == 0
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert "2024" in labels and "Mar" in labels, labels  # ConciseDateFormatter: the year once, then months


def test_long_category_names_are_rotated_or_thinned_until_none_overlap() -> None:
    names = [f"Региональный дистрибьютор номер {i}" for i in range(15)]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(names, range(15))

    report = finish_figure(fig)

    assert report["overlapping_tick_labels_before"] > 0
    assert report["overlapping_tick_labels"] == 0


def test_small_values_and_a_scripts_own_formatter_are_left_alone() -> None:
    fig, (small, own) = plt.subplots(1, 2)
    small.plot([0, 1, 2], [0.1, 0.25, 0.4])
    own.plot([0, 1], [1000, 5000])
    own.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:.0f}k"))

    finish_figure(fig)

    assert all("\u00a0" not in t.get_text() for t in small.get_yticklabels())
    assert any(t.get_text().endswith("k") for t in own.get_yticklabels())


def test_house_rc_sets_figure_size_dpi_and_concise_dates() -> None:
    assert matplotlib.rcParams["figure.figsize"] == list(HOUSE_RC["figure.figsize"])
    assert matplotlib.rcParams["figure.dpi"] == 100
    assert matplotlib.rcParams["date.converter"] == "concise"
