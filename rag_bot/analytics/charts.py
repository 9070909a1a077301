"""Charts: a request + a query result -> matplotlib code from the LLM -> the sandbox runs it -> PNG.

The LLM sees the column names, their types and a few sample rows, never the whole data; the data
reach the script as `data.csv` inside the sandbox. Generated code never runs in this process: the
`sandbox` package runs it in a separate, locked-down process. A failing script gets one retry with
its error; a second failure leaves the user with the table and a clear message.
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from rag_bot.llm.base import ChatMessage, LLMClient
from sandbox import ErrorKind, SandboxRunner

logger = logging.getLogger(__name__)

ChartStatus = Literal["ok", "failed", "no_data"]

CHART_SYSTEM = (
    "You write short Python scripts that draw one chart with matplotlib. Rules: "
    "read the data with pandas: df = pd.read_csv('data.csv'); use only pandas, numpy and matplotlib; "
    "no network, no other files; call plt.savefig('chart.png', dpi=100, bbox_inches='tight') at the end. "
    "Reply with the code only, in one ```python block."
)

_LANGUAGE_NAME = {"ru": "Russian", "en": "English"}


@dataclass
class ChartAnswer:
    status: ChartStatus
    png: bytes | None
    code: str | None
    message: str
    retried: bool = False
    timings: dict[str, float] = field(default_factory=dict)


def _plain(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return value


def data_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    """The query result as CSV bytes for the sandbox (the only way data reach the script)."""
    import csv

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_plain(v) for v in row])
    return buffer.getvalue().encode("utf-8")


def describe_data(columns: Sequence[str], rows: Sequence[Sequence[Any]], samples: int = 5) -> str:
    """Column names, types and a few rows: enough for the LLM to write the code, without the data."""
    kinds = []
    for index, name in enumerate(columns):
        value = next((row[index] for row in rows if row[index] is not None), None)
        kinds.append(f"{name} ({type(_plain(value)).__name__ if value is not None else 'empty'})")
    sample = "\n".join(", ".join(str(_plain(v)) for v in row) for row in rows[:samples])
    return f"Columns: {', '.join(kinds)}\nRows: {len(rows)}\nFirst rows:\n{sample}"


def extract_code(reply: str) -> str:
    """The code of a ```python block (or the whole reply when the model sent bare code)."""
    match = re.search(r"```(?:python|py)?\s*\n(.*?)```", reply, re.S)
    return (match.group(1) if match else reply).strip()


def generate_chart_code(
    request: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    llm: LLMClient,
    language: str,
    previous: tuple[str, str] | None = None,
) -> str:
    """Ask the LLM for the script; `previous` = (code, error) of a failed attempt to fix."""
    prompt = (
        f"Request: {request}\n\n{describe_data(columns, rows)}\n\n"
        f"Write the title and axis labels in {_LANGUAGE_NAME.get(language, 'English')}."
    )
    messages = [ChatMessage("system", CHART_SYSTEM), ChatMessage("user", prompt)]
    if previous is not None:
        messages += [
            ChatMessage("assistant", f"```python\n{previous[0]}\n```"),
            ChatMessage("user", f"The script failed:\n{previous[1][-1500:]}\nFix it. Reply with the code only."),
        ]
    return extract_code(llm.complete(messages, max_tokens=600).text)


_FAILED = {
    "en": "I could not draw this chart (the generated code failed twice). Here is the data as a table.",
    "ru": "Не получилось построить график (сгенерированный код дважды завершился с ошибкой). Вот данные таблицей.",
}
_UNAVAILABLE = {
    "en": "Charts are turned off on this server (its chart sandbox cannot isolate code here; the administrator "
          "can see why in the log). Here is the data as a table.",
    "ru": "Графики на этом сервере отключены (песочница для графиков не может здесь изолировать код; причина "
          "в журнале сервера). Вот данные таблицей.",
}
_NO_DATA = {
    "en": "There are no data to plot for this request.",
    "ru": "Для этого запроса нет данных для графика.",
}


def answer_chart(
    request: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    llm: LLMClient,
    sandbox: SandboxRunner,
    language: str,
    timeout_s: float = 20.0,
) -> ChartAnswer:
    """Draw the chart for an already-computed result: generate, run in the sandbox, retry once."""
    if not rows:
        return ChartAnswer("no_data", None, None, _NO_DATA.get(language, _NO_DATA["en"]))
    files = {"data.csv": data_csv(columns, rows)}
    timings: dict[str, float] = {}
    previous: tuple[str, str] | None = None
    code = ""
    for attempt in range(2):
        started = time.perf_counter()
        code = generate_chart_code(request, columns, rows, llm=llm, language=language, previous=previous)
        timings[f"generate_{attempt}_s"] = time.perf_counter() - started
        started = time.perf_counter()
        result = sandbox.run(code, files, timeout_s=timeout_s)
        timings[f"sandbox_{attempt}_s"] = time.perf_counter() - started
        pngs = [image.data for image in result.images if image.format == "png"]
        if result.ok and pngs:
            return ChartAnswer("ok", pngs[0], code, "", retried=attempt > 0, timings=timings)
        if result.error is not None and result.error.kind == ErrorKind.UNAVAILABLE:
            # The sandbox fails closed on this host: no retry, no second LLM call; the log says why.
            return ChartAnswer("failed", None, code, _UNAVAILABLE.get(language, _UNAVAILABLE["en"]), timings=timings)
        error = str(result.error) if result.error else "the script saved no chart.png"
        detail = (result.stderr or error)
        logger.info("chart attempt %d failed: %s", attempt, error)
        previous = (code, detail)
    return ChartAnswer("failed", None, code, _FAILED.get(language, _FAILED["en"]), retried=True, timings=timings)
