"""Run chart code in a confined child process, with a warm pool so a chart costs no import time.

`SubprocessSandbox` keeps `pool_size` workers that have already imported matplotlib/numpy/pandas and
confined themselves (see worker.py, confine.py); each is used for one job and replaced in the
background. Everything a worker sends back is treated as hostile: size-capped, schema-checked, PNGs
signature-checked; the user-facing messages are written here, not by the child.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import collections
import itertools
import json
import logging
import os
import re
import secrets
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from sandbox.checks import check_code
from sandbox.isolation import IsolationPlan, allocate_uid, detect_isolation, mpl_cache_dir, worker_env
from sandbox.limits import Limits, cpu_budget_s
from sandbox.result import ErrorKind, Readability, SandboxError, SandboxImage, SandboxResult
from sandbox.zygote import Zygote

logger = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# File names the script will see in its cwd; no separators, no dot-files, nothing to traverse with.
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}$")
_STDERR_CAP = 64 * 1024
_EXIT_CONFINEMENT_FAILED = 70


def _weak_isolation_message(plan: IsolationPlan) -> str:
    return (
        f"Charts are turned off: this host cannot confine chart code (missing: {', '.join(plan.missing())}). "
        "In a container, allow unshare and pivot_root (CAP_SYS_ADMIN, or a seccomp profile that permits "
        "unshare; see sandbox/README.md), or accept weaker isolation explicitly with "
        "allow_weak_isolation=True (RAG_BOT_SANDBOX_ALLOW_WEAK_ISOLATION=true)."
    )


class SandboxRunner(Protocol):
    """The seam rag_bot depends on; tests and offline demos may pass a fake."""

    def run(
        self,
        code: str,
        files: Mapping[str, bytes] | None = None,
        timeout_s: float = 10.0,
        limits: Limits | None = None,
    ) -> SandboxResult: ...

    def close(self) -> None: ...


@dataclass(eq=False)
class _Worker:
    """One confined worker: its process group and the parent's pipe ends (raw fds)."""

    id: str
    pgid: int
    stdin: int
    stdout: int
    stderr: int
    status: int | None  # zygote children report their exit status here
    proc: subprocess.Popen[bytes] | None  # fresh processes only; zygote children are not ours to wait for
    host_dir: str
    uid: int | None
    started: float
    ready: bool = False
    fds_open: bool = True

    def fds(self) -> list[int]:
        return [
            fd for fd in (self.stdin, self.stdout, self.stderr, self.status) if fd is not None and fd >= 0
        ]


@dataclass
class _Outcome:
    """What the parent observed of one job, before interpretation."""

    output: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    ready: bool = False
    timed_out: bool = False
    overflow: bool = False
    signal: int | None = None
    exit_code: int | None = None
    finished: bool = False  # the reporter confirmed the worker (and its PID namespace) ended
    accepted: bool = False  # the worker acknowledged the job (b"A") before running it


class SubprocessSandbox:
    """A `SandboxRunner` backed by confined worker processes; thread-safe; call `close()` when done."""

    def __init__(
        self,
        pool_size: int = 2,
        limits: Limits | None = None,
        startup_timeout_s: float = 60.0,
        isolation: IsolationPlan | None = None,
        prefork: bool = True,
        allow_weak_isolation: bool = False,
    ) -> None:
        """`prefork` forks workers from a warmed zygote (fast); False starts a fresh interpreter per worker.

        `isolation` overrides the probed plan; tests use it to check each layer holds on its own.
        Fails closed: unless the plan has both the namespace jail and seccomp, every `run` returns an
        `UNAVAILABLE` error and no worker is started, except with `allow_weak_isolation=True`.
        """
        self.limits = limits or Limits()
        self.startup_timeout_s = startup_timeout_s
        self.plan: IsolationPlan = isolation or detect_isolation()
        self.refusal = None if self.plan.strong or allow_weak_isolation else _weak_isolation_message(self.plan)
        if self.refusal is not None:
            logger.error("chart sandbox refuses to run: %s", self.refusal)
            pool_size, prefork = 0, False
        elif not self.plan.strong:
            logger.warning("chart sandbox runs with WEAKER isolation, as configured: missing %s",
                           ", ".join(self.plan.missing()))
        self.pool_size = max(0, pool_size)
        self._mpl_cache = mpl_cache_dir()
        self._base = tempfile.mkdtemp(prefix="rag-bot-sandbox-")
        os.chmod(self._base, 0o711)  # a dedicated uid must be able to reach its own work dir
        self._ids = itertools.count(1)
        self._pool: collections.deque[_Worker] = collections.deque()
        self._active: set[_Worker] = set()
        self._cond = threading.Condition()
        self._closed = False
        self._prefork = prefork
        self._zygote: Zygote | None = None
        self._zygote_failed_at = -1e9
        if prefork:
            self._zygote = self._start_zygote()
        self._refiller: threading.Thread | None = None
        if self.pool_size:
            self._refiller = threading.Thread(target=self._refill_loop, name="sandbox-pool", daemon=True)
            self._refiller.start()
        atexit.register(self.close)

    # --- public API -----------------------------------------------------------------------------

    def run(
        self,
        code: str,
        files: Mapping[str, bytes] | None = None,
        timeout_s: float = 10.0,
        limits: Limits | None = None,
    ) -> SandboxResult:
        """Run `code` with `files` in its cwd; returns images or a typed error, never raises for the script.

        Raises ValueError for caller mistakes (bad file names) and RuntimeError after `close()`.
        """
        started = time.monotonic()
        if self.refusal is not None:
            return SandboxResult(error=SandboxError(ErrorKind.UNAVAILABLE, self.refusal, self.refusal))
        limits = limits or self.limits
        files = dict(files or {})
        for name, data in files.items():
            if not _FILE_NAME.match(name) or not isinstance(data, bytes | bytearray):
                raise ValueError(f"sandbox input file name must be a plain file name with bytes: {name!r}")
        if sum(len(data) for data in files.values()) > self.limits.disk_mb * 1024 * 1024 // 2:
            raise ValueError(f"sandbox input files exceed half of the {self.limits.disk_mb} MB work dir")
        if limits.ast_check:
            failure = check_code(code)
            if failure is not None:
                error = SandboxError(
                    ErrorKind.VIOLATION, f"The chart code was refused: {failure.message}", failure.message
                )
                return SandboxResult(error=error, duration_s=time.monotonic() - started)
        for attempt in (1, 2):
            worker = self._take_worker(cold=attempt == 2)
            outcome: _Outcome | None = None
            try:
                outcome = self._execute(worker, code, files, timeout_s, limits)
                result = self._interpret(worker, outcome, timeout_s, limits, started)
            finally:
                self._dispose(worker, finished=outcome is not None and outcome.finished)
            assert outcome is not None
            if outcome.accepted or outcome.timed_out:
                break
            # The worker died before it could take the job (e.g. killed by an admin): one fresh try.
        level = logging.DEBUG if result.ok else logging.INFO
        kind = result.error.kind.value if result.error else "ok"
        logger.log(level, "sandbox run %s: %s in %.2fs, %d image(s)", worker.id, kind, result.duration_s,
                   len(result.images))  # fmt: skip
        return result

    def close(self) -> None:
        """Stop every worker (pooled and running) and delete all work dirs; safe to call twice."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            workers, running = list(self._pool), list(self._active)
            self._pool.clear()
            self._cond.notify_all()
        for worker in workers:
            self._dispose(worker)
        for worker in running:  # only signal: the thread running it owns its fds and cleans up
            _kill_group(worker.pgid, None)
        if self._refiller is not None:
            self._refiller.join(timeout=5)
        with self._cond:  # a worker the refiller spawned while we were closing
            workers = list(self._pool)
            self._pool.clear()
        for worker in workers:
            self._dispose(worker)
        with self._cond:
            zygote, self._zygote = self._zygote, None
        if zygote is not None:
            zygote.close()
        shutil.rmtree(self._base, ignore_errors=True)
        atexit.unregister(self.close)

    def wait_ready(self, timeout_s: float = 60.0) -> bool:
        """Block until the pool is full of warm workers (benchmarks, start-up health checks)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._cond:
                full = len(self._pool) >= self.pool_size and all(self._poll_ready(w) for w in self._pool)
            if full:
                return True
            time.sleep(0.05)
        return False

    def __enter__(self) -> SubprocessSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- pool ------------------------------------------------------------------------------------

    def _spawn(self) -> _Worker:
        wid = f"sbx-{os.getpid()}-{next(self._ids)}-{secrets.token_hex(4)}"
        host_dir = os.path.join(self._base, wid)
        os.mkdir(host_dir, 0o711)
        uid = allocate_uid() if self.plan.drop_user else None
        if not self.plan.jail:  # without the jail the script works in a real directory on disk
            work = os.path.join(host_dir, "work")
            os.mkdir(work, 0o700)
            if uid is not None:
                os.chown(work, uid, uid)
        job_plan = {"id": wid, "host_dir": host_dir, "uid": uid, "gid": uid, "disk_mb": self.limits.disk_mb}
        zygote = self._current_zygote()
        if zygote is not None:
            try:
                pid, (stdin, stdout, stderr, status) = zygote.spawn(job_plan, self.startup_timeout_s)
            except OSError as exc:
                logger.warning("sandbox zygote failed (%s); fresh worker processes for 30 s", exc)
                with self._cond:
                    if self._zygote is zygote:
                        self._zygote, self._zygote_failed_at = None, time.monotonic()
                zygote.close()
            else:
                for fd in (stdin, stdout, stderr, status):
                    os.set_blocking(fd, False)
                return _Worker(wid, pid, stdin, stdout, stderr, status, None, host_dir, uid, time.monotonic())
        proc = subprocess.Popen(
            self.plan.command(job_plan), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=worker_env(host_dir, self._mpl_cache), cwd=host_dir,
            start_new_session=True,
        )  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        fds = [os.dup(pipe.fileno()) for pipe in (proc.stdin, proc.stdout, proc.stderr)]
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            pipe.close()
        for fd in fds:
            os.set_blocking(fd, False)
        return _Worker(wid, proc.pid, fds[0], fds[1], fds[2], None, proc, host_dir, uid, time.monotonic())

    def _start_zygote(self) -> Zygote:
        env = worker_env(self._base, self._mpl_cache)
        return Zygote.start(self.plan.command, env, self._base, f"rag-bot-sandbox-zygote {self._base}")

    def _current_zygote(self) -> Zygote | None:
        """The zygote to fork from; restarted (at most every 30 s) if it died, e.g. by the OOM killer."""
        with self._cond:
            if not self._prefork or self._closed:
                return None
            if self._zygote is None and time.monotonic() - self._zygote_failed_at > 30:
                try:
                    self._zygote = self._start_zygote()
                except OSError:
                    logger.exception("could not restart the sandbox zygote")
                    self._zygote_failed_at = time.monotonic()
            return self._zygote

    def _refill_loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and len(self._pool) >= self.pool_size:
                    self._cond.wait()
                if self._closed:
                    return
            try:
                worker = self._spawn()
            except Exception:  # noqa: BLE001 - keep the pool alive; the next run cold-starts anyway
                logger.exception("could not start a sandbox worker; retrying in 1 s")
                time.sleep(1)
                continue
            with self._cond:
                if self._closed:
                    stray = worker
                else:
                    self._pool.append(worker)
                    stray = None
            if stray is not None:
                self._dispose(stray)

    def _poll_ready(self, worker: _Worker) -> bool:
        """Non-blocking: has the worker announced it is warm and confined?"""
        if worker.ready:
            return True
        try:
            byte = os.read(worker.stdout, 1)
        except BlockingIOError:
            return False
        worker.ready = byte == b"R"
        return worker.ready

    def _take_worker(self, cold: bool = False) -> _Worker:
        with self._cond:
            if self._closed:
                raise RuntimeError("the sandbox has been closed")
            chosen = None if cold else next((w for w in self._pool if self._poll_ready(w)), None)
            if chosen is None and self._pool and not cold:
                chosen = self._pool[0]  # still importing; as good as a cold start, but already begun
            if chosen is not None:
                self._pool.remove(chosen)
                self._cond.notify_all()
        if chosen is None:
            logger.debug("sandbox pool empty: cold start")
            chosen = self._spawn()
        with self._cond:
            self._active.add(chosen)
        return chosen

    def _dispose(self, worker: _Worker, finished: bool = False) -> None:
        """Kill the worker's whole process group, reap it, sweep its uid, delete its work dir.

        `finished`: its reporter already said the PID namespace is gone, so its pid may be reused: skip.
        """
        if not (finished and self.plan.init):
            _kill_group(worker.pgid, worker.proc)
        if worker.uid is not None and not self.plan.init:
            _kill_uid(worker.uid)  # no PID namespace: catch anything that left the process group
        if worker.fds_open:
            worker.fds_open = False
            for fd in worker.fds():
                os.close(fd)
        _rmtree(worker.host_dir)
        with self._cond:
            self._active.discard(worker)

    # --- one job ---------------------------------------------------------------------------------

    def _execute(
        self, worker: _Worker, code: str, files: dict[str, bytes], timeout_s: float, limits: Limits
    ) -> _Outcome:
        job = json.dumps(
            {
                "code": code,
                "files": {name: base64.b64encode(data).decode() for name, data in files.items()},
                "limits": limits.to_json(),
                "timeout_s": timeout_s,
            }
        ).encode()
        max_output = (limits.max_images * limits.max_image_mb * 1024 * 1024 * 4) // 3
        max_output += 8 * limits.max_output_chars + 1024 * 1024
        out = _Outcome(ready=self._poll_ready(worker))
        pending = memoryview(job)
        status = bytearray()
        sel = selectors.DefaultSelector()
        for fd in (worker.stdout, worker.stderr, worker.status):
            if fd is not None:
                sel.register(fd, selectors.EVENT_READ)
        if out.ready:
            sel.register(worker.stdin, selectors.EVENT_WRITE)
            deadline = time.monotonic() + timeout_s
        else:
            deadline = worker.started + self.startup_timeout_s
        try:
            while sel.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    out.timed_out = True
                    break
                for key, _ in sel.select(remaining):
                    fd = key.fd
                    if fd == worker.stdin:
                        try:
                            pending = pending[os.write(fd, pending[: 1 << 16]) :]
                        except BrokenPipeError:  # the worker died before reading its job
                            pending = pending[:0]
                        if not pending:
                            sel.unregister(fd)
                            os.close(fd)  # EOF tells the worker the job is complete
                            worker.stdin = -1
                        continue
                    try:
                        chunk = os.read(fd, 1 << 16)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        sel.unregister(fd)
                    elif fd == worker.status:
                        status += chunk[:16]
                    elif fd == worker.stderr:
                        out.stderr += chunk[: max(0, _STDERR_CAP - len(out.stderr))]
                    else:
                        if not out.ready:
                            if chunk[:1] != b"R":
                                out.stderr += b"worker sent garbage before it was ready"
                                return out
                            out.ready, chunk = True, chunk[1:]
                            deadline = time.monotonic() + timeout_s  # the job's clock starts now
                            sel.register(worker.stdin, selectors.EVENT_WRITE)
                        if chunk and not out.accepted:
                            if chunk[:1] != b"A":
                                out.stderr += b"worker did not acknowledge the job"
                                return out
                            out.accepted, chunk = True, chunk[1:]
                        out.output += chunk
                        if len(out.output) > max_output:
                            out.overflow = True
                            return out
        finally:
            sel.close()
            if worker.proc is not None:
                _wait_exit(worker.proc, 0.0 if (out.timed_out or out.overflow) else 2.0)
                _kill_group(worker.pgid, worker.proc)
                rc = worker.proc.returncode
            else:
                out.finished = bool(status)
                rc = int(status.strip() or b"0") if status.strip().isdigit() else None
            if rc is not None:
                out.exit_code = rc
                out.signal = -rc if rc < 0 else (rc - 128 if rc > 128 else None)
        return out

    def _interpret(
        self, worker: _Worker, out: _Outcome, timeout_s: float, limits: Limits, started: float
    ) -> SandboxResult:
        duration = time.monotonic() - started
        stderr_tail = bytes(out.stderr).decode(errors="replace").strip()[-2000:]

        def fail(kind: ErrorKind, message: str, detail: str = "") -> SandboxResult:
            return SandboxResult(error=SandboxError(kind, message, detail), duration_s=duration,
                                 worker_id=worker.id)  # fmt: skip

        if not out.ready:
            if out.timed_out:
                return fail(ErrorKind.INTERNAL, "The chart sandbox did not start in time; try again.")
            logger.error("sandbox worker %s failed to start (exit %s): %s", worker.id, out.exit_code,
                         stderr_tail)  # fmt: skip
            return fail(ErrorKind.INTERNAL, "The chart sandbox could not start; see the server log.",
                        stderr_tail)  # fmt: skip
        if out.timed_out:
            return fail(
                ErrorKind.TIMEOUT, f"The chart code took longer than {timeout_s:g} s and was stopped."
            )
        if out.overflow:
            return fail(ErrorKind.VIOLATION, "The chart code produced more output than the sandbox accepts.")
        try:
            return self._parse(bytes(out.output), limits, duration, worker.id)
        except (ValueError, TypeError, KeyError, binascii.Error) as exc:
            logger.debug("sandbox %s: no valid result (%s), exit %s", worker.id, exc, out.exit_code)
        if out.signal in (signal.SIGXCPU, signal.SIGKILL):
            cpu = cpu_budget_s(timeout_s)
            return fail(
                ErrorKind.TIMEOUT, f"The chart code used more than {cpu} s of CPU time and was stopped."
            )
        if out.signal is not None:
            name = (
                signal.Signals(out.signal).name if out.signal in signal.valid_signals() else str(out.signal)
            )
            return fail(ErrorKind.CRASHED, f"The chart process crashed ({name}); often a sign of running out "
                        "of memory. Try a smaller data set or a simpler chart.", name)  # fmt: skip
        if out.exit_code not in (None, 0):
            return fail(ErrorKind.SCRIPT_ERROR,
                        f"The chart code ended the process early (exit status {out.exit_code}).")  # fmt: skip
        return fail(ErrorKind.CRASHED, "The chart sandbox returned no readable result.")

    def _parse(self, raw: bytes, limits: Limits, duration: float, worker_id: str) -> SandboxResult:
        """Validate the worker's JSON document; anything malformed raises and becomes CRASHED."""
        doc = json.loads(raw)
        if not isinstance(doc, dict):
            raise TypeError("result is not an object")
        cap = limits.max_output_chars
        stdout, stderr = str(doc.get("stdout", ""))[:cap], str(doc.get("stderr", ""))[:cap]
        error = None
        if doc.get("error") is not None:
            kind = ErrorKind(doc["error"]["kind"])
            if kind not in (ErrorKind.MEMORY, ErrorKind.VIOLATION, ErrorKind.SCRIPT_ERROR):
                raise ValueError(f"unexpected error kind from worker: {kind}")
            detail = str(doc["error"].get("detail", ""))[:500]
            error = SandboxError(kind, _message(kind, detail, limits), detail)
        images = []
        for item in list(doc.get("images") or [])[: limits.max_images]:
            name, fmt = str(item["name"]), str(item["format"])
            data = base64.b64decode(item["data"], validate=True)
            if not _FILE_NAME.match(name) or len(data) > limits.max_image_mb * 1024 * 1024:
                continue
            if fmt == "png" and data.startswith(PNG_SIGNATURE):
                images.append(SandboxImage(name, "png", data))
            elif fmt == "svg" and limits.collect_svg and b"<svg" in data[:4096]:
                images.append(SandboxImage(name, "svg", data))
            else:
                logger.warning("sandbox %s: dropped %s, not a valid %s", worker_id, name, fmt)
        readability = [
            Readability(int(r["tick_labels"]), int(r["overlapping_tick_labels"]),
                        int(r["overlapping_tick_labels_before"]))
            for r in list(doc.get("style") or [])[: limits.max_images]
        ]
        return SandboxResult(
            images=images, stdout=stdout, stderr=stderr, readability=readability,
            stdout_truncated=bool(doc.get("stdout_truncated")) or len(str(doc.get("stdout", ""))) > cap,
            stderr_truncated=bool(doc.get("stderr_truncated")) or len(str(doc.get("stderr", ""))) > cap,
            duration_s=duration, error=error, worker_id=worker_id,
        )  # fmt: skip


def _message(kind: ErrorKind, detail: str, limits: Limits) -> str:
    """User-facing text, written by the parent: the child may be hostile, so it only supplies `detail`."""
    if kind is ErrorKind.MEMORY:
        return f"The chart code needed more than the allowed {limits.memory_mb} MB of memory."
    if kind is ErrorKind.VIOLATION:
        return f"The chart code tried something the sandbox does not allow: {detail}"
    return f"The chart code failed: {detail}"


def _wait_exit(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Wait for exit without reaping, so the pid (our process-group id) cannot be reused yet."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is not None or time.monotonic() >= deadline:
            return
        time.sleep(0.005)


def _kill_group(pgid: int, proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL a worker's process group (its first process called setsid), then reap what is ours."""
    if proc is None or proc.returncode is None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if proc is not None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            logger.error("sandbox worker %s did not die after SIGKILL", proc.pid)


def _kill_uid(uid: int) -> None:
    """Kill every process of a dedicated sandbox uid (double-forked daemons escape the group)."""
    for _ in range(5):
        found = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/status", "rb") as fh:
                    line = next(ln for ln in fh if ln.startswith(b"Uid:"))
                if int(line.split()[1]) == uid:
                    os.kill(int(entry), signal.SIGKILL)
                    found = True
            except (OSError, StopIteration, ValueError, IndexError):
                continue
        if not found:
            return
        time.sleep(0.01)


def _rmtree(path: str) -> None:
    """Delete a work dir even if the script chmod-ed parts of it unreadable."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        return
    except OSError:
        for root, dirs, _files in os.walk(path):
            for name in dirs:
                try:
                    os.chmod(os.path.join(root, name), 0o700)
                except OSError:
                    pass
        shutil.rmtree(path, ignore_errors=True)


_default: SubprocessSandbox | None = None
_default_lock = threading.Lock()


def default_sandbox() -> SubprocessSandbox:
    """The process-wide sandbox behind module-level `run`, started on first use."""
    global _default
    with _default_lock:
        if _default is None or _default._closed:
            _default = SubprocessSandbox()
        return _default


def run(
    code: str,
    files: Mapping[str, bytes] | None = None,
    timeout_s: float = 10.0,
    limits: Limits | None = None,
) -> SandboxResult:
    """Run chart code in the default sandbox; see `SubprocessSandbox.run`."""
    return default_sandbox().run(code, files, timeout_s, limits)
