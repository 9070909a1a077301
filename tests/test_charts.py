"""Chart flow with a scripted LLM and the real sandbox (separate locked-down process)."""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterator

import pytest

from rag_bot.analytics.charts import answer_chart, data_csv, extract_code
from rag_bot.llm.fake import FakeLLM
from sandbox import SubprocessSandbox

GOOD = """```python
import pandas as pd
import matplotlib.pyplot as plt
df = pd.read_csv('data.csv')
plt.bar(df['month'], df['revenue'])
plt.title('Выручка по месяцам')
plt.savefig('chart.png')
```"""
BROKEN = "```python\nimport pandas as pd\ndf = pd.read_csv('data.csv')\ndf['no_such_column'].plot()\n```"
COLUMNS = ["month", "revenue"]
ROWS = [(dt.date(2024, m, 1), decimal.Decimal("1000.50") * m) for m in range(1, 13)]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SubprocessSandbox]:
    with SubprocessSandbox(pool_size=1) as box:
        yield box


def test_chart_is_drawn_in_the_sandbox_from_the_result(sandbox: SubprocessSandbox) -> None:
    llm = FakeLLM([GOOD])
    chart = answer_chart("График выручки по месяцам", COLUMNS, ROWS, llm=llm, sandbox=sandbox, language="ru")
    assert chart.status == "ok" and not chart.retried
    assert chart.png is not None and chart.png.startswith(b"\x89PNG\r\n\x1a\n")
    prompt = llm.received[0][1].content
    assert "month (str)" in prompt and "revenue (float)" in prompt and "Russian" in prompt
    assert "Rows: 12" in prompt


def test_failed_script_goes_back_to_the_llm_once_with_its_error(sandbox: SubprocessSandbox) -> None:
    llm = FakeLLM([BROKEN, GOOD])
    chart = answer_chart("revenue by month", COLUMNS, ROWS, llm=llm, sandbox=sandbox, language="en")
    assert chart.status == "ok" and chart.retried
    assert "no_such_column" in llm.received[1][-1].content


def test_two_failures_give_a_clear_message_and_no_image(sandbox: SubprocessSandbox) -> None:
    llm = FakeLLM([BROKEN, BROKEN])
    chart = answer_chart("revenue by month", COLUMNS, ROWS, llm=llm, sandbox=sandbox, language="en")
    assert chart.status == "failed" and chart.png is None
    assert "table" in chart.message


def test_hostile_chart_code_is_refused_by_the_sandbox(sandbox: SubprocessSandbox) -> None:
    evil = "```python\nimport os\nos.system('touch /tmp/pwned_by_chart')\n```"
    llm = FakeLLM([evil, evil])
    chart = answer_chart("plot", COLUMNS, ROWS, llm=llm, sandbox=sandbox, language="en")
    assert chart.status == "failed"
    import os

    assert not os.path.exists("/tmp/pwned_by_chart")


def test_empty_result_needs_no_llm(sandbox: SubprocessSandbox) -> None:
    llm = FakeLLM()
    chart = answer_chart("plot", COLUMNS, [], llm=llm, sandbox=sandbox, language="en")
    assert chart.status == "no_data" and llm.received == []


def test_data_and_code_helpers() -> None:
    assert data_csv(["a", "b"], [(dt.date(2024, 1, 2), decimal.Decimal("1.5"))]) == b"a,b\r\n2024-01-02,1.5\r\n"
    assert extract_code("text\n```python\nprint(1)\n```\nmore") == "print(1)"
    assert extract_code("print(2)") == "print(2)"


def _inspect(sandbox: SubprocessSandbox, code: str) -> dict | None:
    from rag_bot.evaluation.charts import inspect_chart

    return inspect_chart(sandbox, extract_code(code), COLUMNS, ROWS)


def test_eval_reads_what_the_saved_figure_draws(sandbox: SubprocessSandbox) -> None:
    from rag_bot.evaluation.charts import chart_matches

    summary = _inspect(sandbox, GOOD)
    assert summary is not None and summary["axes"][0]["bars"] == 12
    assert summary["axes"][0]["title"] == "Выручка по месяцам"
    assert chart_matches(summary, "bar", {"points": 12})[0]
    assert not chart_matches(summary, "bar", {"points": 7})[0]  # one series: exactly one bar per point
    assert not chart_matches(summary, "line", {"points": 12})[0]  # bars where a line was asked
    assert chart_matches(summary, "stacked_bar", {"points": 7, "series": "segment"})[0]


def test_eval_counts_line_points_and_pie_wedges(sandbox: SubprocessSandbox) -> None:
    from rag_bot.evaluation.charts import chart_matches

    line = "import pandas as pd\nimport matplotlib.pyplot as plt\ndf = pd.read_csv('data.csv')\n" \
           "plt.plot(df['month'], df['revenue'], marker='o')\nplt.savefig('chart.png')\nplt.close()\n"
    summary = _inspect(sandbox, line)
    assert chart_matches(summary, "line", {"points": 12}) == (True, "line: 12 marks, expected 12")
    pie = "import pandas as pd\nimport matplotlib.pyplot as plt\ndf = pd.read_csv('data.csv').head(3)\n" \
          "plt.pie(df['revenue'], labels=df['month'])\nplt.savefig('chart.png')\n"
    assert chart_matches(_inspect(sandbox, pie), "pie", {"points": 3})[0]
    assert chart_matches(None, "pie", {"points": 3}) == (False, "no figure")


def test_eval_counts_the_values_a_histogram_counts_not_its_bins(sandbox: SubprocessSandbox) -> None:
    from rag_bot.evaluation.charts import chart_matches

    hist = "import pandas as pd\nimport matplotlib.pyplot as plt\ndf = pd.read_csv('data.csv')\n" \
           "plt.hist(df['revenue'], bins=4)\nplt.savefig('chart.png')\n"
    summary = _inspect(sandbox, hist)
    assert chart_matches(summary, "histogram", {"min_points": 12}) == (
        True, "histogram: 4 bins over 12 values, expected at least 12")
    assert not chart_matches(summary, "histogram", {"min_points": 1000})[0]


def test_weakly_isolated_host_gets_no_chart_and_a_plain_note() -> None:
    import dataclasses

    from sandbox.isolation import detect_isolation

    weak = dataclasses.replace(detect_isolation(), namespaces=(), jail=False)  # as after a refused unshare
    llm = FakeLLM([GOOD, GOOD])
    with SubprocessSandbox(pool_size=0, isolation=weak) as box:
        chart = answer_chart("График выручки по месяцам", COLUMNS, ROWS, llm=llm, sandbox=box, language="ru")
    assert chart.status == "failed" and chart.png is None
    assert "Графики на этом сервере отключены" in chart.message and "таблицей" in chart.message
    assert len(llm.received) == 1  # no repair round: the code was fine, the host is not
