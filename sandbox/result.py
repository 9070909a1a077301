"""What a sandbox run hands back: images, captured output and, when it failed, one typed error.

The bot never sees a matplotlib object, only bytes that were validated in the parent process, so a
hostile script can at worst produce a wrong picture.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class ErrorKind(enum.StrEnum):
    """Why a run failed; callers branch on this (retry with a fix, tell the user, log an incident)."""

    TIMEOUT = "timeout"  # wall-clock or CPU budget exhausted
    MEMORY = "memory"  # the address-space limit was hit
    VIOLATION = "violation"  # the code tried something the sandbox forbids (static check or OS refusal)
    SCRIPT_ERROR = "script_error"  # the code raised an ordinary exception; `detail` has the last line
    CRASHED = "crashed"  # the sandbox process died without a result (e.g. killed by a signal)
    INTERNAL = "internal"  # the sandbox itself could not start; not the script's fault
    UNAVAILABLE = "unavailable"  # this host cannot confine the script well enough; nothing ran


class SandboxError(Exception):
    """A failed run; `str(err)` is the user-facing message, `detail` is for logs and LLM repair loops."""

    def __init__(self, kind: ErrorKind, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.detail = detail

    def __repr__(self) -> str:
        return f"SandboxError({self.kind.value!r}, {self.message!r}, detail={self.detail!r})"


@dataclass(frozen=True)
class SandboxImage:
    """One image file the script produced; `data` is checked to be a PNG (or SVG text) by the parent."""

    name: str
    format: str  # "png" or "svg"
    data: bytes


@dataclass(frozen=True)
class Readability:
    """How a saved figure's tick labels render (sandbox/house_style.py): shown, and pairs overlapping."""

    tick_labels: int
    overlapping_tick_labels: int
    overlapping_tick_labels_before: int  # as the script drew it, before the house style's save-time pass


@dataclass(frozen=True)
class SandboxResult:
    """Everything one run produced. `error is None` means the script finished normally."""

    images: list[SandboxImage] = field(default_factory=list)
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    duration_s: float = 0.0
    error: SandboxError | None = None
    worker_id: str = ""  # appears in the worker's command line; for logs and leak checks
    readability: list[Readability] = field(default_factory=list)  # one per figure the script saved

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def pngs(self) -> list[bytes]:
        """PNG bytes in the order the files were found; what the UI sends as image elements."""
        return [img.data for img in self.images if img.format == "png"]

    def raise_for_error(self) -> SandboxResult:
        """Raise the run's `SandboxError`, for callers that prefer exceptions; returns self otherwise."""
        if self.error is not None:
            raise self.error
        return self
