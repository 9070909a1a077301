"""The sandbox fails closed: no chart unless the namespace jail and seccomp both hold.

A container with Docker's default seccomp profile refuses unshare(2). The test makes exactly that host:
a child process installs a seccomp filter that refuses only unshare (inherited by everything it starts,
like a container's profile), then probes and runs a chart the way the bot does. It also checks that the
sandbox's own filter refuses the syscalls the outside attack listed (memfd_create, open_tree, pidfd_open ...).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from conftest import REPO

from sandbox import Limits, SubprocessSandbox

pytestmark = pytest.mark.timeout(180)

CHART = "import matplotlib.pyplot as plt\nplt.bar(['a', 'b'], [1, 2])\nplt.savefig('chart.png')\n"

# Runs in a fresh interpreter: refuse unshare for this process and all its children, then run a chart.
CHILD = textwrap.dedent("""
    import ctypes, errno, json, struct, sys
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS, required for an unprivileged filter
    UNSHARE = 272
    prog = [(0x20, 0, 0, 0),                         # load the syscall number
            (0x15, 0, 1, UNSHARE),                   # unshare?
            (0x06, 0, 0, 0x00050000 | errno.EPERM),  #   refuse with EPERM, as Docker's profile does
            (0x06, 0, 0, 0x7FFF0000)]                # everything else: allow
    code = b"".join(struct.pack("HBBI", *insn) for insn in prog)
    buf = ctypes.create_string_buffer(code)
    fprog = ctypes.create_string_buffer(struct.pack("HxxxxxxQ", len(prog), ctypes.addressof(buf)))
    assert libc.prctl(22, 2, fprog, 0, 0) == 0, ctypes.get_errno()  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
    assert libc.syscall(UNSHARE, 0x20000) == -1  # CLONE_NEWNS: now refused, as in such a container

    from sandbox import SubprocessSandbox, describe_isolation
    allow = sys.argv[1] == "allow"
    with SubprocessSandbox(pool_size=0, allow_weak_isolation=allow) as box:
        result = box.run(sys.argv[2], timeout_s=60)
    info = describe_isolation()
    print(json.dumps({"kind": result.error.kind.value if result.error else None,
                      "message": str(result.error) if result.error else "", "pngs": len(result.pngs),
                      "jail": info["filesystem_jail"], "level": info["level"]}))
""")


def _run_child(mode: str) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, CHART], cwd=REPO, capture_output=True, text=True,
                          timeout=170)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_sandbox_refuses_to_run_when_its_jail_is_unavailable() -> None:
    seen = _run_child("strict")
    assert (seen["jail"], seen["level"]) == (False, "weak")
    assert seen["kind"] == "unavailable" and seen["pngs"] == 0
    # The message names what is missing and the setting that accepts weaker isolation.
    assert "namespace jail" in str(seen["message"])
    assert "RAG_BOT_SANDBOX_ALLOW_WEAK_ISOLATION" in str(seen["message"])


def test_weaker_isolation_runs_only_when_explicitly_allowed() -> None:
    seen = _run_child("allow")
    assert (seen["jail"], seen["kind"], seen["pngs"]) == (False, None, 1)


@pytest.fixture(scope="module")
def box() -> Iterator[SubprocessSandbox]:
    with SubprocessSandbox(pool_size=1) as sbx:
        assert sbx.plan.strong, f"this host should give the full sandbox: {sbx.plan}"
        yield sbx


# x86_64 numbers: memfd_create, memfd_secret, open_tree, move_mount, fsopen, fsmount, fspick, mount_setattr,
# pidfd_open, pidfd_getfd, pidfd_send_signal, process_madvise, kcmp, personality, syslog, iopl, ioperm.
REFUSED = {"memfd_create": 319, "memfd_secret": 447, "open_tree": 428, "move_mount": 429, "fsopen": 430,
           "fsmount": 432, "fspick": 433, "mount_setattr": 442, "pidfd_open": 434, "pidfd_getfd": 438,
           "pidfd_send_signal": 424, "process_madvise": 440, "kcmp": 312, "personality": 135, "syslog": 103,
           "iopl": 172, "ioperm": 173}


def test_seccomp_refuses_memfd_open_tree_pidfd_and_friends(box: SubprocessSandbox) -> None:
    probe = textwrap.dedent(f"""
        import ctypes, json, os
        libc = ctypes.CDLL(None, use_errno=True)
        seen = {{}}
        for name, nr in {REFUSED!r}.items():
            # Arguments that would succeed where the call is allowed (our own pid, a plain name ...).
            args = {{"memfd_create": (b"x", 0), "pidfd_open": (os.getpid(), 0), "open_tree": (-100, b"/", 1),
                     "personality": (0xFFFFFFFF,), "kcmp": (os.getpid(), os.getpid(), 0, 0, 0)}}.get(name, (0, 0, 0))
            ret = libc.syscall(nr, *args)
            seen[name] = (ret, ctypes.get_errno())
        print(json.dumps(seen))
    """)
    result = box.run(probe, timeout_s=30, limits=Limits(ast_check=False))
    assert result.error is None, (result.error, result.stderr)
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    allowed = {name: ret_errno for name, ret_errno in seen.items() if ret_errno != [-1, 1]}  # EPERM
    assert allowed == {}, f"not refused with EPERM by the sandbox's seccomp filter: {allowed}"
