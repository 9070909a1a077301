"""Child entry point: pre-load matplotlib, confine itself, wait for one job, run it, report, exit.

Protocol with the parent (runner.py), over pipes only:
  plan     JSON (argv, or from the zygote): which isolation steps to apply (isolation.py decides)
  stdout   b"R" once warm and confined, b"A" once the job is read, then one JSON result, then EOF
  stdin    one JSON job {code, files (base64), limits, timeout_s}, then EOF
  fd 3     (zygote children only) the exit status, written by the reporter process
A worker is used for exactly one job, so nothing a script does can leak into the next one.
Process tree of one worker: reporter (outside the new PID namespace) -> init (PID 1) -> worker.
Imports nothing from rag_bot, and nothing that is not already on the interpreter's path.
"""

from __future__ import annotations

import base64
import builtins
import errno
import gc
import io
import json
import linecache
import os
import re
import resource
import sys
import traceback
from typing import Any, NoReturn

from sandbox import confine, house_style
from sandbox.limits import Limits, apply_rlimits, vm_size_bytes

EXIT_CONFINEMENT_FAILED = 70
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}$")
_SCRIPT_NAME = "<chart>"


class _Capture(io.TextIOBase):
    """A sys.stdout/sys.stderr replacement that keeps the first `limit` characters and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[str] = []
        self.size = 0
        self.truncated = False

    def write(self, s: str) -> int:
        s = str(s)
        room = self.limit - self.size
        if room > 0:
            self.parts.append(s[:room])
            self.size += min(len(s), room)
        if len(s) > room:
            self.truncated = True
        return len(s)

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def getvalue(self) -> str:
        return "".join(self.parts)


def _report_status(child: int, status_fd: int | None) -> NoReturn:
    """Outside the new PID namespace: wait for its init, then pass its exit status on.

    The runner learns how the worker ended (signal numbers become 128+n) from our exit code (a fresh
    process) or from the status pipe (a child of the zygote, which the runner cannot wait for).
    """
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # hold no pipe ends: the parent's EOF must mean "the worker is done"
        os.dup2(devnull, fd)
    _, status = os.waitpid(child, 0)
    code = 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.waitstatus_to_exitcode(status)
    if status_fd is not None:
        try:
            os.write(status_fd, f"{code}\n".encode())
        except OSError:
            pass
    os._exit(code)


def _run_as_init() -> None:
    """As PID 1 of the fresh PID namespace: fork the real worker, reap, and exit with its status.

    The worker must not be PID 1 itself: the kernel drops signals (e.g. SIGXCPU from RLIMIT_CPU) sent to
    a namespace's init that has no handler. When this process exits, the kernel kills everything left
    in the namespace, which is what guarantees no background process outlives a run.
    """
    pid = os.fork()
    if pid == 0:
        return
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in range(0, 4):
        os.dup2(devnull, fd)
    while True:
        try:
            wpid, status = os.wait()
        except ChildProcessError:
            os._exit(EXIT_CONFINEMENT_FAILED)
        if wpid == pid:
            if os.WIFSIGNALED(status):
                os._exit(128 + os.WTERMSIG(status))
            os._exit(os.waitstatus_to_exitcode(status))


_saved_figures: set[int] = set()
_style_reports: list[dict[str, int]] = []  # one per saved figure: house_style.finish_figure's report


_PRELOAD = (
    "numpy", "pandas", "matplotlib.pyplot", "matplotlib.dates", "matplotlib.ticker", "matplotlib.colors",
    "matplotlib.backends.backend_svg", "math", "datetime", "statistics", "collections", "itertools", "json",
    "csv", "textwrap", "decimal",
)  # fmt: skip


def _preload() -> None:
    """Import and exercise the plotting stack once, so a job pays none of it (the point of the pool).

    Rendering each common chart type once warms matplotlib's lazy imports and font/glyph caches.
    """
    import importlib

    import matplotlib

    matplotlib.use("Agg")
    for name in _PRELOAD:
        importlib.import_module(name)
    import matplotlib.figure
    import matplotlib.pyplot as plt
    import pandas as pd

    house_style.apply_house_style()  # before the warm-up, so its caches hold the house fonts and sizes
    matplotlib.rcParams["font.family"] = "DejaVu Sans"  # ships with matplotlib; has Cyrillic glyphs
    df = pd.read_csv(io.StringIO("город,месяц,продажи\nМосква,2024-01,3\nКазань,2024-02,2\n"))
    fig, axes = plt.subplots(2, 3, figsize=(9, 5))
    df.groupby("город")["продажи"].sum().plot.bar(ax=axes[0, 0], title="Проверка шрифта")
    df.groupby("месяц")["продажи"].mean().plot(ax=axes[0, 1], marker="o", legend=True)
    df.set_index("город")["продажи"].plot.pie(  # type: ignore[call-overload]  # pandas-stubs: a Series needs no y
        ax=axes[0, 2], autopct="%1.0f%%"
    )
    axes[1, 0].scatter(df["продажи"], df["продажи"], alpha=0.5)
    axes[1, 1].hist(df["продажи"], bins=3)
    axes[1, 2].plot(pd.to_datetime(df["месяц"]), df["продажи"])
    fig.tight_layout()
    fig.savefig(io.BytesIO(), format="png")
    fig.savefig(io.BytesIO(), format="svg")
    plt.close("all")

    original = matplotlib.figure.Figure.savefig

    def savefig(self: Any, fname: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(fname, (str, os.PathLike)):
            _saved_figures.add(id(self))
            try:
                _style_reports.append(house_style.finish_figure(self))
            except Exception as exc:  # noqa: BLE001 - a style pass must never cost the chart itself
                sys.stderr.write(f"house style skipped: {type(exc).__name__}: {exc}\n")
        return original(self, fname, *args, **kwargs)

    matplotlib.figure.Figure.savefig = savefig  # type: ignore[method-assign]
    plt.show = lambda *a, **k: None  # Agg cannot show; avoid a warning in every LLM-written script
    gc.collect()
    gc.freeze()  # the zygote's objects are never scanned again: faster collections, fewer CoW copies


def _sandbox_user(plan: dict[str, Any]) -> tuple[int, int] | None:
    """The uid and gid to become, or None when the plan names no dedicated user."""
    uid, gid = plan.get("uid"), plan.get("gid")
    if uid is None:
        return None
    if gid is None:  # never half a user: refuse rather than keep root's group
        raise confine.ConfinementError("the plan names a uid but no gid")
    return int(uid), int(gid)


def _confine(plan: dict[str, Any]) -> None:
    user = _sandbox_user(plan)
    if plan.get("jail"):
        project_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        confine.enter_jail(plan["host_dir"], disk_mb=int(plan.get("disk_mb", 64)), project_root=project_root)
        if user is not None:
            confine.chown_workdir(*user)
    else:
        os.chdir(os.path.join(plan["host_dir"], "work"))
    confine.drop_bounding_set()
    if user is not None:
        confine.drop_privileges(*user)
    confine.clear_capabilities()
    confine.set_no_new_privs()
    if plan.get("seccomp"):
        confine.install_seccomp()


def _probe(plan: dict[str, Any]) -> dict[str, Any]:
    """Report what confinement actually achieved; run by isolation.py instead of a job."""
    import _socket

    report: dict[str, Any] = {"uid": os.getuid(), "seccomp": confine.seccomp_active()}
    report["capabilities_cleared"] = _libc_caps_empty()
    report["host_fs_hidden"] = not os.path.exists("/etc/passwd") and not os.path.exists("/proc/1")
    try:
        _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM).close()
        report["socket_refused"] = False
    except OSError:
        report["socket_refused"] = True
    try:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        report["fork_refused"] = False
    except OSError:
        report["fork_refused"] = True
    return report


def _libc_caps_empty() -> bool:
    try:
        with open("/proc/self/status") as fh:  # absent inside the jail: then trust clear_capabilities
            caps = {ln.split(":")[0]: ln.split()[1] for ln in fh if ln.startswith("Cap")}
    except OSError:
        return True
    return all(int(v, 16) == 0 for k, v in caps.items() if k in ("CapEff", "CapPrm", "CapBnd"))


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _error(kind: str, message: str, detail: str = "") -> dict[str, str]:
    return {"kind": kind, "message": message, "detail": detail[:2000]}


def _classify(exc: BaseException, limits: Limits) -> dict[str, str]:
    """Turn the script's exception into a typed error; `detail` is the traceback's last line."""
    last = "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()[-1][:500]
    if isinstance(exc, MemoryError):
        return _error(
            "memory", f"The chart code used more than the allowed {limits.memory_mb} MB of memory.", last
        )
    if isinstance(exc, OSError) and exc.errno in (errno.EPERM, errno.EACCES, errno.EROFS):
        return _error("violation", f"The chart code tried something the sandbox does not allow: {last}", last)
    return _error("script_error", f"The chart code failed: {last}", last)


def _format_traceback(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != _SCRIPT_NAME:
        tb = tb.tb_next  # hide the worker's own frames
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _autosave_open_figures() -> None:
    """Scripts often forget `savefig`; whatever figure is still open and unsaved becomes a PNG."""
    import matplotlib.pyplot as plt

    for num in plt.get_fignums():
        fig = plt.figure(num)
        if id(fig) not in _saved_figures:
            fig.savefig(f"figure_{num}.png")
    plt.close("all")


def _collect_images(inputs: set[str], limits: Limits) -> list[dict[str, str]]:
    suffixes = (".png", ".svg") if limits.collect_svg else (".png",)
    found = []
    with os.scandir(".") as entries:
        for entry in entries:
            if entry.name in inputs or not entry.name.lower().endswith(suffixes):
                continue
            if not entry.is_file(follow_symlinks=False):
                continue
            st = entry.stat(follow_symlinks=False)
            if st.st_size <= limits.max_image_mb * 1024 * 1024:
                found.append((st.st_mtime_ns, entry.name))
    images = []
    for _, name in sorted(found)[: limits.max_images]:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as fh:
            data = fh.read()
        fmt = "svg" if name.lower().endswith(".svg") else "png"
        images.append({"name": name, "format": fmt, "data": base64.b64encode(data).decode()})
    return images


def _run_job(job: dict[str, Any], plan: dict[str, Any], baseline_vm: int, result_fd: int) -> None:
    limits = Limits.from_json(job.get("limits") or {})
    code = str(job["code"])
    inputs = set()
    for name, b64 in (job.get("files") or {}).items():
        if not _FILE_NAME.match(name):
            continue  # the parent validated names already; never write outside the cwd
        with open(name, "xb") as fh:
            fh.write(base64.b64decode(b64))
        inputs.add(name)
    cwd = os.getcwd()
    os.environ.clear()
    os.environ.update(
        {"HOME": cwd, "MPLCONFIGDIR": os.path.join(cwd, ".matplotlib"), "TMPDIR": cwd,
         "MPLBACKEND": "Agg", "LANG": "C.UTF-8"}
    )  # fmt: skip

    out, err = _Capture(limits.max_output_chars), _Capture(limits.max_output_chars)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # fd-level writes by the script go nowhere; print() goes to the captures
        os.dup2(devnull, fd)
    os.close(devnull)
    sys.stdout, sys.stderr = out, err

    usage = resource.getrusage(resource.RUSAGE_SELF)
    apply_rlimits(
        limits,
        timeout_s=float(job.get("timeout_s", 10)),
        baseline_vm=baseline_vm,
        cpu_used_s=usage.ru_utime + usage.ru_stime,
        nproc=bool(plan.get("nproc")),
    )
    linecache.cache[_SCRIPT_NAME] = (len(code), None, code.splitlines(True), _SCRIPT_NAME)
    scope: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    error = None
    try:
        exec(compile(code, _SCRIPT_NAME, "exec"), scope)  # noqa: S102 - this process is the sandbox
    except SystemExit as exc:
        if exc.code not in (None, 0):
            error = _error("script_error", f"The chart code exited with status {exc.code!r}.", "SystemExit")
    except BaseException as exc:  # noqa: BLE001 - everything the script raises is reported, typed
        error = _classify(exc, limits)
        err.write(_format_traceback(exc))
    scope.clear()
    if error is not None and error["kind"] == "memory":
        gc.collect()  # room to save figures and write the result

    images: list[dict[str, str]] = []
    try:
        _autosave_open_figures()
        images = _collect_images(inputs, limits)
    except BaseException as exc:  # noqa: BLE001
        if error is None:
            error = _classify(exc, limits)
            error["message"] = "The chart could not be saved: " + error["detail"]
    result = {
        "error": error,
        "stdout": out.getvalue(),
        "stderr": err.getvalue(),
        "stdout_truncated": out.truncated,
        "stderr_truncated": err.truncated,
        "images": images,
        "style": _style_reports,
    }
    _write_all(result_fd, json.dumps(result).encode())


def become_worker(plan: dict[str, Any]) -> NoReturn:
    """Enter namespaces, fork below a status reporter (and an init), confine, then probe or run one job.

    Called in a fresh process (cold start) or in a child the zygote just forked; stdin/stdout/stderr are
    the job pipes either way, and fd 3 is the status pipe for zygote children.
    """
    status_fd = plan.get("status_fd")
    try:
        confine.enter_namespaces(plan.get("namespaces") or ())
    except (OSError, confine.ConfinementError) as exc:
        os.write(2, f"sandbox worker: namespaces failed: {exc}\n".encode())
        os._exit(EXIT_CONFINEMENT_FAILED)
    child = os.fork()
    if child:
        _report_status(child, status_fd)
    if status_fd is not None:
        os.close(status_fd)
    if plan.get("init") and os.getpid() == 1:
        _run_as_init()
    baseline_vm = vm_size_bytes()  # /proc is gone once the jail is up
    try:
        _confine(plan)
    except (OSError, confine.ConfinementError) as exc:
        os.write(2, f"sandbox worker: confinement failed: {exc}\n".encode())
        os._exit(EXIT_CONFINEMENT_FAILED)
    if plan.get("mode") == "probe":
        _write_all(1, json.dumps(_probe(plan)).encode())
        os._exit(0)
    confine.block_sockets()
    _write_all(1, b"R")
    job = json.loads(_read_all(0))
    _write_all(1, b"A")  # accepted: from here on a failure is the job's, not the worker's
    result_fd = os.dup(1)
    _run_job(job, plan, baseline_vm, result_fd)
    os._exit(0)


def main(argv: list[str]) -> None:
    """Entry point of `python -c BOOT plan-json`: a cold worker, a probe, or the zygote."""
    plan = json.loads(argv[0])
    mode = plan.get("mode", "worker")
    if mode != "probe":
        _preload()
    if mode == "zygote":
        from sandbox import zygote

        zygote.serve(plan)
    become_worker(plan)
