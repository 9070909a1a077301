"""How many rows a `generate_series()` call can make, from its constant arguments, or None if unknown.

The guard allows generate_series() only when this bound is known and small: a calendar of months, a
range of numbers. The estimate is deliberately coarse (a month is 30 days, date_trunc() is ignored):
it only has to tell a 12-row calendar from a billion-row bomb, and err towards "unknown".
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime, timedelta

from sqlglot import exp

_UNIT_SECONDS = {
    "microsecond": 1e-6, "millisecond": 1e-3, "second": 1.0, "minute": 60.0, "hour": 3600.0,
    "day": 86400.0, "week": 7 * 86400.0, "month": 30 * 86400.0, "quarter": 91 * 86400.0,
    "year": 365 * 86400.0, "decade": 3650 * 86400.0, "century": 36500 * 86400.0,
}
_UNIT_ALIASES = {"us": "microsecond", "ms": "millisecond", "sec": "second", "secs": "second", "s": "second",
                 "min": "minute", "mins": "minute", "m": "minute", "h": "hour", "hr": "hour", "hrs": "hour",
                 "d": "day", "w": "week", "mon": "month", "mons": "month", "y": "year", "yr": "year",
                 "yrs": "year", "years": "year"}
_INTERVAL_PART = re.compile(r"([-+]?\d+(?:\.\d+)?)\s*([a-z]+)")
_TEMPORAL_TYPES = {"DATE", "TIMESTAMP", "TIMESTAMPTZ", "DATETIME", "TIMESTAMPLTZ"}


def series_rows(node: exp.Func) -> int | None:
    """Upper estimate of the rows of generate_series(start, stop[, step]); None when not constant."""
    start, stop, step = node.args.get("start"), node.args.get("end"), node.args.get("step")
    if start is None or stop is None:
        return None
    low, high = _number(start), _number(stop)
    if low is not None and high is not None:
        increment = 1.0 if step is None else _number(step)
        return _count(high - low, increment)
    t0, t1 = _moment(start), _moment(stop)
    seconds = _interval_seconds(step) if step is not None else None
    if t0 is None or t1 is None or seconds is None:
        return None
    return _count((t1 - t0).total_seconds(), seconds)


def _count(span: float, step: float | None) -> int | None:
    if step is None or step == 0 or not math.isfinite(span):
        return None
    if span / step < 0:
        return 0
    return int(span / step) + 1


def _unwrap(node: exp.Expression) -> exp.Expression:
    while isinstance(node, exp.Paren):
        node = node.this
    return node


def _number(node: exp.Expression) -> float | None:
    node = _unwrap(node)
    if isinstance(node, exp.Neg):
        value = _number(node.this)
        return None if value is None else -value
    if isinstance(node, exp.Cast) and not node.to.is_type(*_TEMPORAL_TYPES, "INTERVAL"):
        return _number(node.this)
    if isinstance(node, exp.Literal) and not node.is_string:
        try:
            return float(node.name)
        except ValueError:
            return None
    return None


def _moment(node: exp.Expression) -> datetime | None:
    """A constant point in time: a date/timestamp literal, now()/current_date, ± intervals, date_trunc."""
    node = _unwrap(node)
    if isinstance(node, exp.Cast) and node.to.is_type(*_TEMPORAL_TYPES):
        inner = _unwrap(node.this)
        if isinstance(inner, exp.Literal) and inner.is_string:
            try:
                return datetime.fromisoformat(inner.name.strip())
            except ValueError:
                return None
        return _moment(inner)
    if isinstance(node, (exp.CurrentDate, exp.CurrentTimestamp, exp.Localtimestamp)):
        return datetime.combine(date.today(), datetime.min.time())
    if isinstance(node, (exp.TimestampTrunc, exp.DateTrunc)):
        return _moment(node.this)  # truncation moves a bound by less than one unit
    if isinstance(node, (exp.Add, exp.Sub)):
        base, delta = _moment(node.this), _interval_seconds(node.expression)
        if base is None or delta is None:
            return None
        return base + timedelta(seconds=delta if isinstance(node, exp.Add) else -delta)
    return None


def _interval_seconds(node: exp.Expression) -> float | None:
    node = _unwrap(node)
    if isinstance(node, exp.Cast) and node.to.is_type("INTERVAL"):
        node = _unwrap(node.this)
        text = node.name if isinstance(node, exp.Literal) and node.is_string else None
    elif isinstance(node, exp.Interval):
        value = _unwrap(node.this) if node.this is not None else None
        if not isinstance(value, exp.Literal):
            return None
        unit = node.args.get("unit")
        text = f"{value.name} {unit.name if unit is not None else ''}"
    else:
        return None
    if text is None:
        return None
    parts = _INTERVAL_PART.findall(text.lower())
    if not parts:
        return None
    total = 0.0
    for amount, unit in parts:
        unit = _UNIT_ALIASES.get(unit, unit.rstrip("s") if unit.rstrip("s") in _UNIT_SECONDS else unit)
        if unit not in _UNIT_SECONDS:
            return None
        total += float(amount) * _UNIT_SECONDS[unit]
    return total
