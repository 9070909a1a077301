"""Functional tests of the chart sandbox against real worker processes (no mocks)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from sandbox_testkit import assert_no_leftovers, leftover_processes, png_size

import sandbox
from sandbox import ErrorKind, Limits, SubprocessSandbox, check_code, describe_isolation

pytestmark = pytest.mark.timeout(120)

CSV = "город,продажи\nМосква,120\nСанкт-Петербург,95\nКазань,40\n".encode()
BAR_CHART = """
import pandas as pd
import matplotlib.pyplot as plt

df = pd.read_csv("data.csv")
fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
ax.bar(df["город"], df["продажи"], color="steelblue")
ax.set_title("Продажи по городам")
ax.set_xlabel("Город")
ax.set_ylabel("Продажи, шт.")
plt.savefig("chart.png")
print("строк:", len(df))
"""


@pytest.fixture(scope="module")
def box() -> Iterator[SubprocessSandbox]:
    with SubprocessSandbox(pool_size=2) as sbx:
        yield sbx


def test_bar_chart_with_cyrillic_labels_gives_png_of_requested_size(box: SubprocessSandbox) -> None:
    result = box.run(BAR_CHART, {"data.csv": CSV}, timeout_s=20)

    assert result.ok, result.error
    assert [img.name for img in result.images] == ["chart.png"]
    png = result.pngs[0]
    assert len(png) > 5_000
    assert png_size(png) == (600, 400)
    assert "строк: 3" in result.stdout
    assert "missing from" not in result.stderr  # matplotlib warns about glyphs it cannot draw
    assert result.duration_s > 0
    assert_no_leftovers(result.worker_id)


def test_script_error_reports_last_traceback_line(box: SubprocessSandbox) -> None:
    result = box.run("import math\nx = math.sqrt(4)\ny = x / 0\n", timeout_s=20)

    assert result.error is not None
    assert result.error.kind is ErrorKind.SCRIPT_ERROR
    assert result.error.detail == "ZeroDivisionError: float division by zero"
    assert "ZeroDivisionError" in str(result.error)
    assert 'File "<chart>", line 3' in result.stderr and "y = x / 0" in result.stderr
    assert "sandbox/worker.py" not in result.stderr


def test_syntax_error_is_a_script_error(box: SubprocessSandbox) -> None:
    result = box.run("plt.plot([1, 2)\n", timeout_s=20)

    assert result.error is not None and result.error.kind is ErrorKind.SCRIPT_ERROR
    assert "SyntaxError" in result.error.detail


def test_open_figures_are_saved_automatically_and_saved_ones_not_twice(box: SubprocessSandbox) -> None:
    code = (
        "import matplotlib.pyplot as plt\n"
        "fig1 = plt.figure(figsize=(3, 2), dpi=100)\nplt.plot([1, 3, 2])\nplt.savefig('first.png')\n"
        "fig2 = plt.figure(figsize=(4, 3), dpi=100)\nplt.pie([1, 2, 3])\nplt.show()\n"
    )
    result = box.run(code, timeout_s=20)

    assert result.ok, result.error
    assert sorted(img.name for img in result.images) == ["figure_2.png", "first.png"]
    sizes = {img.name: png_size(img.data) for img in result.images}
    assert sizes == {"first.png": (300, 200), "figure_2.png": (400, 300)}


def test_svg_is_collected_only_when_enabled(box: SubprocessSandbox) -> None:
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.savefig('c.svg')\nplt.savefig('c.png')\n"
    plain = box.run(code, timeout_s=20)
    with_svg = box.run(code, timeout_s=20, limits=Limits(collect_svg=True))

    assert [i.format for i in plain.images] == ["png"]
    assert sorted(i.format for i in with_svg.images) == ["png", "svg"]


@pytest.mark.parametrize("prefork", [True, False], ids=["zygote_fork", "fresh_process"])
def test_cold_start_when_pool_is_empty(prefork: bool) -> None:
    with SubprocessSandbox(pool_size=0, prefork=prefork) as cold:
        result = cold.run(BAR_CHART, {"data.csv": CSV}, timeout_s=20)
        worker_id = result.worker_id

    assert result.ok, result.error
    assert png_size(result.pngs[0]) == (600, 400)
    assert_no_leftovers(worker_id)


def test_a_pooled_worker_that_died_is_replaced_transparently() -> None:
    with SubprocessSandbox(pool_size=1) as sbx:
        assert sbx.wait_ready(90)
        os.killpg(sbx._pool[0].pgid, 9)  # e.g. an admin or the OOM killer
        result = sbx.run("import matplotlib.pyplot as plt\nplt.plot([1, 2])\n", timeout_s=20)
    assert result.ok, result.error


def test_a_dead_zygote_falls_back_to_fresh_processes() -> None:
    with SubprocessSandbox(pool_size=0) as sbx:
        assert sbx._zygote is not None
        os.killpg(sbx._zygote.proc.pid, 9)
        sbx._zygote.proc.wait()
        result = sbx.run("import matplotlib.pyplot as plt\nplt.plot([1, 2])\n", timeout_s=20)
        assert sbx._zygote is None  # replaced by fresh processes, restarted later
    assert result.ok, result.error


def test_close_stops_every_pooled_worker() -> None:
    sbx = SubprocessSandbox(pool_size=2)
    assert sbx.wait_ready(90)
    base = sbx._base
    assert len(leftover_processes(base)) >= 2
    sbx.close()
    sbx.close()  # idempotent

    assert_no_leftovers(base)
    assert not os.path.exists(base)
    with pytest.raises(RuntimeError):
        sbx.run("x = 1")


def test_leak_detector_sees_a_shell_holding_a_marker() -> None:
    """Positive control for the security suite's leak check: it must find what it looks for."""
    import subprocess
    import uuid

    marker = f"sbxmark-{uuid.uuid4().hex}"
    proc = subprocess.Popen(["/bin/sh", "-c", f"sleep 30; : {marker}"])
    try:
        time.sleep(0.1)
        assert leftover_processes(marker) == [proc.pid]
    finally:
        proc.kill()
        proc.wait()
    assert_no_leftovers(marker)


def test_module_level_run_uses_a_default_sandbox() -> None:
    try:
        result = sandbox.run("import matplotlib.pyplot as plt\nplt.plot([1, 2])\n", timeout_s=20)
    finally:
        sandbox.default_sandbox().close()
    assert result.ok, result.error
    assert len(result.pngs) == 1


def test_bad_input_file_names_are_a_caller_error(box: SubprocessSandbox) -> None:
    for name in ("../x.csv", "/etc/passwd", ".env", "a/b.csv", ""):
        with pytest.raises(ValueError):
            box.run("x = 1", {name: b"1"})


@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        ("import os", "import of 'os'"),
        ("import subprocess", "import of 'subprocess'"),
        ("from importlib import import_module", "import of 'importlib'"),
        ("__import__('os')", "'__import__'"),
        ("eval('1')", "'eval'"),
        ("exec('x=1')", "'exec'"),
        ("compile('1', 'f', 'eval')", "'compile'"),
        ("open('/etc/passwd')", "outside the work directory"),
        ("import pandas as pd\npd.read_csv('../secret.csv')", "outside the work directory"),
        ("getattr(object, '__subclasses__')", "'getattr' with '__subclasses__'"),
        ("().__class__.__bases__[0].__subclasses__()", "'__subclasses__'"),
        ("f = lambda: 0\nf.__globals__", "'__globals__'"),
        ("__builtins__", "'__builtins__'"),
        ("from io import FileIO", "only StringIO and BytesIO"),
        ("import io\nio.open('x')", "io.open"),
        ("import numpy.ctypeslib", "numpy.ctypeslib"),
        ("import matplotlib\nmatplotlib.subprocess.run(['id'])", "'subprocess'"),
    ],
)
def test_static_check_rejects_obvious_escapes(code: str, fragment: str) -> None:
    failure = check_code(code)
    assert failure is not None
    assert fragment in failure.message


def test_static_check_accepts_typical_chart_code() -> None:
    code = BAR_CHART + (
        "\nimport numpy as np\nfrom io import StringIO\nimport io\nbuf = io.StringIO()\n"
        "import datetime, math, statistics, collections, itertools, json, csv, textwrap, decimal\n"
        "with open('data.csv', encoding='utf-8') as fh:\n    rows = list(csv.reader(fh))\n"
        "if __name__ == '__main__':\n    print(np.mean([1, 2]))\n"
    )
    assert check_code(code) is None


def test_refused_code_never_reaches_a_worker(box: SubprocessSandbox) -> None:
    result = box.run("import os\nos.system('id')")
    assert result.error is not None and result.error.kind is ErrorKind.VIOLATION
    assert "import of 'os' is not allowed" in str(result.error)
    assert result.worker_id == ""


def test_describe_isolation_reports_what_holds() -> None:
    info = describe_isolation()
    for key in ("net_namespace", "pid_namespace", "filesystem_jail", "seccomp", "dedicated_uid", "summary"):
        assert key in info
    if os.geteuid() == 0:
        assert info["dedicated_uid"] is True  # never run LLM code as root


MONTHLY_CSV = ("month,revenue\n" + "".join(f"2024-{m:02d}-01,{382558448.9 + m * 1e7}\n" for m in range(1, 13))).encode()
PLAIN_LINE_CHART = """
import pandas as pd
import matplotlib.pyplot as plt

df = pd.read_csv("data.csv")
plt.figure(figsize=(6, 4))
plt.plot(df["month"], df["revenue"], marker="o")
plt.title("Выручка по месяцам")
plt.savefig("chart.png", dpi=100, bbox_inches="tight")
"""


def test_worker_reports_tick_labels_overlapping_as_drawn_and_none_after_the_house_style(
    box: SubprocessSandbox,
) -> None:
    result = box.run(PLAIN_LINE_CHART, {"data.csv": MONTHLY_CSV}, timeout_s=30)

    assert result.ok, result.error
    assert len(result.pngs) == 1
    [report] = result.readability
    assert report.overlapping_tick_labels_before > 0  # 12 text dates side by side, as the script drew them
    assert report.overlapping_tick_labels == 0
    assert report.tick_labels >= 8
    assert "house style skipped" not in result.stderr
