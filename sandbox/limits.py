"""Resource limits for one run, and the code that applies them as rlimits inside the worker.

rlimits are set with soft == hard, so the script cannot raise them back (that needs CAP_SYS_RESOURCE,
which the worker has dropped by then).
"""

from __future__ import annotations

import math
import resource
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Limits:
    """Budgets for one run. The defaults fit a small chart from a CSV of a few thousand rows."""

    memory_mb: int = 512  # address space the script may add on top of the pre-loaded interpreter
    file_size_mb: int = 16  # largest single file the script may write (RLIMIT_FSIZE)
    disk_mb: int = 64  # in-memory work dir (tmpfs, with the jail); fixed per SubprocessSandbox at start
    max_processes: int = 32  # processes + threads of the sandbox user (RLIMIT_NPROC, when it applies)
    max_open_files: int = 64  # RLIMIT_NOFILE
    max_output_chars: int = 10_000  # stdout and stderr are each cut to this
    max_images: int = 10
    max_image_mb: int = 8
    collect_svg: bool = False  # SVG is text a browser may execute: only enable if the UI sanitises it
    ast_check: bool = True  # static pre-check; the OS limits hold without it (tests prove that)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Limits:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def cpu_budget_s(timeout_s: float) -> int:
    """CPU seconds for a run: a backstop behind the wall clock, so a busy loop dies if the parent hangs."""
    return max(1, math.ceil(timeout_s)) + 1


def vm_size_bytes() -> int:
    """Current address-space size, read before the jail hides /proc; 0 if unknown."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            pages = int(fh.read().split()[0])
        return pages * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


def _set(which: int, value: int) -> None:
    resource.setrlimit(which, (value, value))


def apply_rlimits(
    limits: Limits, *, timeout_s: float, baseline_vm: int, cpu_used_s: float, nproc: bool
) -> None:
    """Apply the limits to the calling (worker) process just before the script runs.

    `baseline_vm` is the address space of the warmed interpreter and `cpu_used_s` the CPU it has burnt
    importing matplotlib, so the script gets its budget on top of what the worker already used.
    `nproc` is false when RLIMIT_NPROC would count unrelated processes (no dedicated sandbox uid).
    """
    _set(resource.RLIMIT_CORE, 0)
    # soft < hard: SIGXCPU first (reported as a timeout), SIGKILL a second later if the script traps it.
    cpu = math.ceil(cpu_used_s) + cpu_budget_s(timeout_s)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    _set(resource.RLIMIT_FSIZE, limits.file_size_mb * 1024 * 1024)
    _set(resource.RLIMIT_NOFILE, limits.max_open_files)
    if nproc:
        _set(resource.RLIMIT_NPROC, limits.max_processes)
    base = baseline_vm or 512 * 1024 * 1024
    _set(resource.RLIMIT_AS, base + limits.memory_mb * 1024 * 1024)
