"""The house style of every chart: set before the script runs, finished when the script saves.

A small model writes plain matplotlib (`plt.plot(df["month"], df["revenue"])`), which on 12 months and
revenue in the hundreds of millions gives overlapping date labels and `1e8` offsets. Rather than hoping
the prompt prevents that, the worker:

1. before the script: `apply_house_style()` sets rcParams (figure size and DPI, concise date axes via
   matplotlib's ConciseDateConverter = AutoDateLocator + ConciseDateFormatter, no offset/scientific
   notation, a light grid, automatic layout);
2. at every `savefig`: `finish_figure()` groups the digits of linear value axes (`382 558 449`), then
   draws the figure and, where tick labels still collide (string dates on a categorical axis, long
   category names), rotates them like `Figure.autofmt_xdate` does and, if needed, keeps every k-th tick;
3. reports what the saved figure looks like: how many tick labels are shown and how many pairs of their
   rendered bounding boxes overlap, before and after the pass.

Imports only matplotlib (the worker imports nothing from rag_bot).
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import matplotlib
from matplotlib import ticker

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

# A no-break space groups digits in Russian and English alike (a comma would read as the Russian
# decimal separator); it never breaks a tick label in two.
GROUP_SEPARATOR = "\u00a0"

HOUSE_RC: dict[RcKeyType, Any] = {
    "figure.figsize": (9.0, 5.0),
    "figure.dpi": 100,
    "figure.autolayout": True,  # tight_layout at every draw: rotated labels and long titles fit
    "date.converter": "concise",
    "axes.formatter.useoffset": False,
    "axes.formatter.limits": (-6, 15),  # no 1e8 scientific notation on money
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 13,
    "axes.titlepad": 10,
    "font.size": 10,
    "legend.frameon": False,
}


def apply_house_style() -> None:
    """Set the rcParams every chart starts from (the script may still override them)."""
    matplotlib.rcParams.update(HOUSE_RC)


def group_digits(value: float, decimals: int) -> str:
    """`1234567.891, 0` -> '1 234 568' (no-break spaces); negative numbers keep their minus sign."""
    text = f"{value:,.{max(decimals, 0)}f}"
    return text.replace(",", GROUP_SEPARATOR).replace("-", "\u2212")


class GroupedFormatter(ticker.Formatter):
    """Tick values with grouped digits and just enough decimals for the tick step."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        locs = [v for v in self.locs if math.isfinite(v)]
        steps = [abs(b - a) for a, b in zip(locs, locs[1:], strict=False) if b != a]
        step = min(steps) if steps else abs(x) or 1.0
        decimals = 0 if step >= 1 else min(6, math.ceil(-math.log10(step) - 1e-9))
        if abs(x) < step * 1e-9:
            x = 0.0  # -0 and 1e-17 from float steps
        return group_digits(x, decimals)


def _group_value_axes(fig: Any) -> None:
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() != "linear" or type(axis.get_major_formatter()) is not ticker.ScalarFormatter:
                continue  # dates, categories, log scales and the script's own formatters stay as they are
            lo, hi = axis.get_view_interval()
            if max(abs(lo), abs(hi)) >= 1000:
                axis.set_major_formatter(GroupedFormatter())


_ISO_DATE = re.compile(r"^(\d{4}-\d{2})-(\d{2})(?:[T ]00:00(?::00(?:\.0+)?)?)?$")


def _shorten_iso_dates(fig: Any) -> None:
    """Dates the script left as text (a categorical axis): '2024-01-01T00:00:00' -> '2024-01-01', or
    '2024-01' when every label is the first of a month (monthly data)."""
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            formatter = axis.get_major_formatter()
            if type(formatter).__name__ != "StrCategoryFormatter":
                continue
            units = getattr(axis, "units", None)
            mapping = getattr(units, "_mapping", None)
            if not mapping:
                continue
            matches = {name: _ISO_DATE.match(str(name)) for name in mapping}
            if not all(matches.values()):
                continue
            monthly = all(m.group(2) == "01" for m in matches.values() if m)
            short = {value: (m.group(1) if monthly else m.group(0)[:10]) for name, value in mapping.items()
                     if (m := matches[name])}
            axis.set_major_formatter(ticker.FuncFormatter(lambda x, pos, short=short: short.get(round(x), "")))


def _label_boxes(axis: Any, renderer: Any) -> list[Any]:
    boxes = []
    for label in axis.get_ticklabels():
        if label.get_visible() and label.get_text().strip():
            boxes.append(label.get_window_extent(renderer))
    return boxes


def count_overlaps(boxes: list[Any]) -> int:
    """Pairs of bounding boxes that intersect (touching edges do not count)."""
    overlapping = 0
    for i, first in enumerate(boxes):
        for second in boxes[i + 1:]:
            if (first.x0 < second.x1 and second.x0 < first.x1 and first.y0 < second.y1 and second.y0 < first.y1):
                overlapping += 1
    return overlapping


def measure(fig: Any) -> tuple[int, int]:
    """(tick labels shown, overlapping pairs of them) as the figure renders now, over all its axes."""
    renderer = _draw(fig)
    shown = overlaps = 0
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            boxes = _label_boxes(axis, renderer)
            shown += len(boxes)
            overlaps += count_overlaps(boxes)
    return shown, overlaps


def _draw(fig: Any) -> Any:
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def _declutter(fig: Any, axis: Any, is_x: bool) -> None:
    """Rotate colliding x labels; then keep every k-th tick until none collide."""
    renderer = _draw(fig)
    if not count_overlaps(_label_boxes(axis, renderer)):
        return
    if is_x and all(label.get_rotation() == 0 for label in axis.get_ticklabels()):
        for label in axis.get_ticklabels():
            label.set_rotation(30)
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")
        renderer = _draw(fig)
        if not count_overlaps(_label_boxes(axis, renderer)):
            return
    locs = list(axis.get_majorticklocs())
    for k in range(2, max(len(locs), 2) + 1):
        axis.set_major_locator(ticker.FixedLocator(locs[::k]))
        renderer = _draw(fig)
        if not count_overlaps(_label_boxes(axis, renderer)):
            return


def finish_figure(fig: Any) -> dict[str, int]:
    """Apply the save-time part of the house style to `fig`; returns the readability report."""
    labels_before, overlaps_before = measure(fig)  # as the script left it
    _group_value_axes(fig)
    _shorten_iso_dates(fig)
    if measure(fig)[1]:
        for ax in fig.axes:
            _declutter(fig, ax.xaxis, is_x=True)
            _declutter(fig, ax.yaxis, is_x=False)
    labels, overlaps = measure(fig)
    return {"tick_labels": labels, "overlapping_tick_labels": overlaps,
            "overlapping_tick_labels_before": overlaps_before, "tick_labels_before": labels_before}
