"""Find out, once per process, which isolation this host really gives us, by probing it.

A probe is a worker started exactly like a real one (same namespaces, same confinement plan) that
reports what it achieved instead of waiting for a job. The strongest candidate that both starts and
passes its own checks wins. Nothing is assumed from the kernel version or from being root: containers,
CI runners and hardened kernels disagree about what unprivileged or even root processes may do.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any

from sandbox import confine

logger = logging.getLogger(__name__)

_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# -I: ignore PYTHON* variables and the user site; the project root is appended (not prepended) so
# nothing in it can shadow numpy or matplotlib.
_BOOT = f"import sys; sys.path.append({_PROJECT_ROOT!r}); from sandbox.worker import main; main(sys.argv[1:])"
_ALL_NS = ("net", "pid", "mount", "ipc", "uts")


@dataclass(frozen=True)
class IsolationPlan:
    """How workers are started and confined on this host (the outcome of probing)."""

    namespaces: tuple[str, ...] = ()  # subset of net, pid, mount, ipc, uts, user
    jail: bool = False  # pivot_root into a minimal read-only root
    drop_user: bool = False  # started as root: run the script as a dedicated unprivileged uid
    seccomp: bool = False
    probe_report: dict[str, Any] = field(default_factory=dict)

    @property
    def strong(self) -> bool:
        """Both walls that hold against a hostile script: the namespace jail and the seccomp filter."""
        return self.jail and self.seccomp

    def missing(self) -> list[str]:
        """The walls `strong` needs that this plan lacks, named for an operator."""
        return [name for name, held in (("namespace jail (unshare + pivot_root)", self.jail),
                                        ("seccomp filter", self.seccomp)) if not held]

    @property
    def init(self) -> bool:
        return "pid" in self.namespaces

    @property
    def nproc_limit(self) -> bool:
        """RLIMIT_NPROC counts per real uid; it only means something for a uid used by this worker alone."""
        return self.drop_user

    def command(self, worker_plan: dict[str, Any]) -> list[str]:
        """The argv that starts one worker under this plan."""
        return [sys.executable, "-I", "-B", "-c", _BOOT, json.dumps(self.worker_plan(worker_plan))]

    def worker_plan(self, extra: dict[str, Any]) -> dict[str, Any]:
        """The JSON plan a worker follows (worker.become_worker); namespaces are entered with unshare(2)."""
        return {
            "namespaces": list(self.namespaces), "jail": self.jail, "init": self.init,
            "seccomp": self.seccomp, "nproc": self.nproc_limit, **extra,
        }  # fmt: skip


def worker_env(home: str, mpl_cache: str) -> dict[str, str]:
    """The complete environment of a worker: nothing inherited, so no secret or DSN can leak in."""
    return {
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": mpl_cache,  # shared font cache for the import; the script sees one in its work dir
        "HOME": home,
        "LANG": "C.UTF-8",
        "PATH": "/usr/bin:/bin",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


_uid_counter = itertools.count()


def allocate_uid() -> int:
    """A uid (used as gid too) no account owns, distinct per worker so workers cannot touch each other.

    Spread by parent pid so two bot processes on one host rarely pick the same numbers.
    """
    return 100_000 + (os.getpid() % 4096) * 256 + next(_uid_counter) % 256


def mpl_cache_dir() -> str:
    """A private, persistent matplotlib config dir, so each worker does not rebuild the font cache."""
    path = os.path.join(tempfile.gettempdir(), f"rag-bot-sandbox-mpl-{os.getuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        st = os.lstat(path)
        if not os.path.isdir(path) or os.path.islink(path) or st.st_uid != os.getuid() or st.st_mode & 0o022:
            return tempfile.mkdtemp(prefix="rag-bot-sandbox-mpl-")  # someone else's: don't trust it
    return path


def _candidates(is_root: bool) -> list[IsolationPlan]:
    seccomp = confine.seccomp_supported()
    ns_sets: list[tuple[str, ...]] = [_ALL_NS, ("net", "pid", "mount"), ("net", "pid"), ("net",)]
    plans = []
    for ns in ns_sets:
        full = ns if is_root else ("user", *ns)
        plans.append(IsolationPlan(namespaces=full, jail="mount" in ns, drop_user=is_root, seccomp=seccomp))
    plans.append(IsolationPlan(drop_user=is_root, seccomp=seccomp))
    if seccomp:
        plans.append(IsolationPlan(drop_user=is_root, seccomp=False))
    return plans


def _probe(plan: IsolationPlan) -> dict[str, Any] | None:
    base = tempfile.mkdtemp(prefix="rag-bot-sandbox-probe-")
    try:
        os.chmod(base, 0o711)
        uid = allocate_uid() if plan.drop_user else None
        work = os.path.join(base, "work")
        os.mkdir(work, 0o700)
        if uid is not None:
            os.chown(work, uid, uid)
        cmd = plan.command({"host_dir": base, "uid": uid, "gid": uid, "mode": "probe", "disk_mb": 4})
        try:
            proc = subprocess.run(
                cmd, env=worker_env(base, base), cwd=base, capture_output=True, timeout=30,
                start_new_session=True, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            logger.debug("isolation probe %s failed to run: %s", plan.namespaces, exc)
            return None
        if proc.returncode != 0:
            logger.debug("isolation probe %s exited %s: %s", plan.namespaces, proc.returncode,
                         proc.stderr.decode(errors="replace").strip()[-500:])  # fmt: skip
            return None
        report: dict[str, Any] = json.loads(proc.stdout)
        ok = (not plan.jail or report.get("host_fs_hidden")) and (uid is None or report.get("uid") == uid)
        if plan.seccomp:
            ok = ok and report.get("seccomp") and report.get("socket_refused") and report.get("fork_refused")
        return report if ok else None
    except (OSError, ValueError) as exc:
        logger.debug("isolation probe %s failed: %s", plan.namespaces, exc)
        return None
    finally:
        shutil.rmtree(base, ignore_errors=True)


_lock = threading.Lock()
_detected: IsolationPlan | None = None


def detect_isolation(refresh: bool = False) -> IsolationPlan:
    """The strongest isolation plan that works here; probed once and cached for the process."""
    global _detected
    with _lock:
        if _detected is not None and not refresh:
            return _detected
        if sys.platform != "linux":
            raise RuntimeError("the chart sandbox needs Linux (namespaces, rlimits, /proc)")
        is_root = os.geteuid() == 0
        chosen = IsolationPlan()
        for plan in _candidates(is_root):
            report = _probe(plan)
            if report is not None:
                chosen = dataclasses.replace(plan, probe_report=report)
                break
        level = logging.INFO if chosen.strong and "net" in chosen.namespaces else logging.WARNING
        logger.log(level, "chart sandbox isolation: %s", _summary(chosen, is_root))
        _detected = chosen
        return chosen


def _summary(plan: IsolationPlan, is_root: bool) -> str:
    parts = [f"namespaces={','.join(plan.namespaces) or 'none'}"]
    parts.append("fs-jail" if plan.jail else "NO fs-jail")
    parts.append("seccomp" if plan.seccomp else "NO seccomp")
    if is_root:
        parts.append("dedicated uid" if plan.drop_user else "RUNS AS ROOT")
    if "net" not in plan.namespaces and not plan.seccomp:
        parts.append("network only blocked at Python level")
    return ", ".join(parts)


def describe_isolation() -> dict[str, bool | str]:
    """What the sandbox achieves on this host, for `rag-bot doctor` and start-up logs."""
    plan = detect_isolation()
    is_root = os.geteuid() == 0
    ns = set(plan.namespaces)
    return {
        "running_as_root": is_root,
        "mechanism": "unshare(2) + pivot_root(2) + seccomp-bpf, via ctypes" if plan.namespaces else "none",
        "user_namespace": "user" in ns,
        "net_namespace": "net" in ns,
        "pid_namespace": "pid" in ns,
        "mount_namespace": "mount" in ns,
        "ipc_namespace": "ipc" in ns,
        "uts_namespace": "uts" in ns,
        "filesystem_jail": plan.jail,
        "dedicated_uid": plan.drop_user,
        "seccomp": plan.seccomp,
        "rlimits": True,
        "nproc_limit": plan.nproc_limit,
        "python_socket_block": True,
        "empty_environment": True,
        "level": "strong" if plan.strong else "weak",
        "summary": _summary(plan, is_root),
    }
