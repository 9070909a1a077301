"""Run LLM-written matplotlib code in a locked-down child process and get PNG bytes back.

Imports nothing from rag_bot. Typical use::

    from sandbox import SubprocessSandbox
    with SubprocessSandbox(pool_size=2) as box:
        result = box.run(code, {"data.csv": csv_bytes}, timeout_s=10)
        if result.ok:
            pngs = result.pngs
        else:
            show(str(result.error))  # user-facing; result.error.kind says why
"""

from sandbox.checks import CheckFailure, check_code
from sandbox.isolation import describe_isolation
from sandbox.limits import Limits
from sandbox.result import ErrorKind, Readability, SandboxError, SandboxImage, SandboxResult
from sandbox.runner import SandboxRunner, SubprocessSandbox, default_sandbox, run

__all__ = [
    "CheckFailure",
    "ErrorKind",
    "Limits",
    "Readability",
    "SandboxError",
    "SandboxImage",
    "SandboxResult",
    "SandboxRunner",
    "SubprocessSandbox",
    "check_code",
    "default_sandbox",
    "describe_isolation",
    "run",
]
