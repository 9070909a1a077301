"""OS-level confinement the worker applies to itself before it reads a job (runs in the child only).

Layers, each usable without the others so the sandbox degrades instead of failing on odd hosts:

- `enter_jail`: in a private mount namespace, pivot into a fresh tmpfs root that holds read-only binds
  of the system and Python directories plus a size-capped tmpfs work dir. Host files (/etc, /root,
  the project's .env, other users' homes, /proc of the parent) simply do not exist any more.
- `drop_privileges`: when started as root, switch to a dedicated, otherwise unused uid/gid so no file
  is writable, no process can be signalled and RLIMIT_NPROC applies (it never applies to root).
- `install_seccomp`: a small BPF filter (x86_64 only) that refuses sockets, process creation, exec,
  ptrace, namespaces, mounts, io_uring, kernel-keyring calls and kill() of process groups; threads
  stay allowed.
- `block_sockets`: a Python-level stub for hosts without seccomp; trivially bypassable, so only a
  speed bump that turns accidental network use into a clear error.

Only stdlib and ctypes are used: no new dependencies and nothing from rag_bot.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
import sys
from collections.abc import Iterable

_libc = ctypes.CDLL(None, use_errno=True)

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_RELATIME = 0x200000
MNT_DETACH = 0x2

JAIL_WORKDIR = "/workdir"  # where the script's cwd appears inside the jail
_PIVOT_ROOT_NR = {"x86_64": 155, "aarch64": 41}


class ConfinementError(RuntimeError):
    """A requested isolation step failed; the worker refuses to run code rather than run it unconfined."""


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise ConfinementError(f"{what}: {os.strerror(err)} (errno {err})")


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def enc(s: str | None) -> bytes | None:
        return s.encode() if s is not None else None

    _check(
        _libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}"
    )


def _locked_flags(path: str) -> int:
    """Mount flags of the source that a user namespace may not clear on a bind remount (as bwrap does)."""
    st = os.statvfs(path).f_flag
    table = {
        os.ST_NOSUID: MS_NOSUID, os.ST_NODEV: MS_NODEV, os.ST_NOEXEC: MS_NOEXEC,
        os.ST_NOATIME: MS_NOATIME, os.ST_NODIRATIME: MS_NODIRATIME, os.ST_RELATIME: MS_RELATIME,
    }  # fmt: skip
    return sum(ms for st_flag, ms in table.items() if st & st_flag)


def _bind(src: str, root: str, *, writable: bool = False, extra: int = 0) -> None:
    target = root + src
    if os.path.isdir(src):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()  # noqa: SIM115 - a mount point for a single file
    _mount(src, target, None, MS_BIND | MS_REC)
    flags = MS_BIND | MS_REMOUNT | MS_NOSUID | extra | _locked_flags(src)
    if not writable:
        flags |= MS_RDONLY
    _mount(None, target, None, flags)


def python_dirs(exclude: str) -> list[str]:
    """Directories the interpreter may still import from after the jail is up (stdlib, venv, .pth dirs).

    `exclude` is the project root: it (and any directory above it) holds .env files and must never be
    bound into the jail, even though an editable install puts it on sys.path.
    """
    import site

    exclude = os.path.realpath(exclude)
    candidates = [sys.base_prefix, sys.prefix, sys.base_exec_prefix, sys.exec_prefix, *site.getsitepackages()]
    candidates += [p for p in sys.path if p and os.path.isabs(p)]
    real = {os.path.realpath(p) for p in candidates if p and os.path.isdir(p)}
    real = {p for p in real if p != exclude and not exclude.startswith(p.rstrip("/") + "/") and p != "/"}
    # keep only top-most directories; a venv inside another bound dir needs no second bind
    return sorted(p for p in real if not any(p != q and p.startswith(q + "/") for q in real))


def _system_dirs() -> Iterable[str]:
    for path in ("/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin"):
        if os.path.lexists(path):
            yield path


_CLONE_FLAGS = {
    "mount": 0x00020000, "uts": 0x04000000, "ipc": 0x08000000, "user": 0x10000000, "pid": 0x20000000,
    "net": 0x40000000,
}  # fmt: skip


def enter_namespaces(namespaces: Iterable[str]) -> None:
    """unshare(2) into fresh namespaces; the PID namespace applies to the next child we fork.

    With "user" (an unprivileged parent), map our uid/gid to 0 inside so mounts become possible; the
    process gains nothing outside the namespace.
    """
    names = set(namespaces)
    flags = sum(_CLONE_FLAGS[n] for n in names)
    if not flags:
        return
    uid, gid = os.getuid(), os.getgid()
    _check(_libc.unshare(ctypes.c_int(flags)), f"unshare({','.join(sorted(names))})")
    if "user" in names:
        for path, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
            with open(f"/proc/self/{path}", "w") as fh:
                fh.write(text)


def enter_jail(host_dir: str, *, disk_mb: int, project_root: str) -> None:
    """Pivot into a minimal root; the only writable places are the work dir and /tmp (both tmpfs).

    `host_dir` is a fresh, empty directory owned by the parent; it is only used as mount points.
    Needs CAP_SYS_ADMIN in the current (private) mount namespace: real root or a user namespace.
    """
    root = os.path.join(host_dir, "root")
    os.makedirs(root, exist_ok=True)
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we do here propagates to the host
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=0755")
    # The tmpfs dirs go first: a venv may live under /tmp (a checkout in a temporary folder), and its
    # read-only bind below must sit on top of the private /tmp, not be hidden by it.
    for path, mode, size in ((JAIL_WORKDIR, 0o700, disk_mb), ("/tmp", 0o1777, 16)):
        os.makedirs(root + path, exist_ok=True)
        opts = f"size={size}m,mode={mode:o}"
        _mount("tmpfs", root + path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts)
    for path in _system_dirs():
        if os.path.islink(path):  # merged /usr: /lib -> usr/lib
            os.symlink(os.readlink(path), root + path)
        else:
            _bind(path, root)
    for path in python_dirs(exclude=project_root):
        if not any(path == d or path.startswith(d + "/") for d in ("/usr", "/lib", "/bin")):
            _bind(path, root)
    for dev in ("null", "zero", "random", "urandom"):
        _bind(f"/dev/{dev}", root, writable=True)
    nr = _PIVOT_ROOT_NR.get(platform.machine())
    if nr is None:
        raise ConfinementError(f"pivot_root: unsupported architecture {platform.machine()}")
    os.chdir(root)
    _check(_libc.syscall(nr, b".", b"."), "pivot_root")  # old root is stacked on top of the new one
    _check(_libc.umount2(b".", MNT_DETACH), "umount old root")  # ... and detached: host fs is gone
    os.chdir("/")
    _mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir(JAIL_WORKDIR)


def chown_workdir(uid: int, gid: int) -> None:
    """Give the jail's work dir to the sandbox user (it was created by root)."""
    os.chown(JAIL_WORKDIR, uid, gid)


def drop_privileges(uid: int, gid: int) -> None:
    """Become an unprivileged, dedicated user for good (real, effective and saved ids; no groups)."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise ConfinementError("privilege drop did not stick")


def drop_bounding_set() -> None:
    """Empty the capability bounding set (needs CAP_SETPCAP, so call it before dropping privileges)."""
    pr_capbset_drop = 24
    for cap in range(64):
        if _libc.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0 and ctypes.get_errno() == errno.EINVAL:
            break  # past the last capability this kernel knows


def clear_capabilities() -> None:
    """Clear all capabilities (matters in a user namespace, where we stay uid 0 of that namespace)."""
    header = struct.pack("Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = bytes(24)  # two {effective, permitted, inheritable} triples, all zero
    hbuf = ctypes.create_string_buffer(header)
    dbuf = ctypes.create_string_buffer(data)
    _check(_libc.capset(hbuf, dbuf), "capset")


def set_no_new_privs() -> None:
    """Forbid gaining privileges via setuid binaries or file caps; also required for seccomp."""
    _check(_libc.prctl(38, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")


def set_process_title(title: str) -> None:
    """Overwrite our argv area so `ps` and /proc/<pid>/cmdline name this worker (setproctitle's trick).

    Forked zygote children would otherwise all show the zygote's command line, and the runner, ops and
    the leak tests find workers by their id there. Best effort: silently does nothing if it cannot.
    """
    try:
        with open("/proc/self/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (fields 48, 49 of stat)
    except (OSError, ValueError, IndexError):
        return
    size = end - start
    if size <= 1:
        return
    data = title.encode()[: size - 1]
    ctypes.memset(start, 0, size)
    ctypes.memmove(start, data, len(data))


# --- seccomp ------------------------------------------------------------------------------------

_AUDIT_ARCH_X86_64 = 0xC000003E
_RET_ALLOW = 0x7FFF0000
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_CLONE_THREAD = 0x00010000

# x86_64 syscall numbers -> errno returned instead of running them.
_DENY_X86_64 = {
    41: errno.EACCES,  # socket
    53: errno.EACCES,  # socketpair
    57: errno.EPERM,  # fork
    58: errno.EPERM,  # vfork
    59: errno.EPERM,  # execve
    322: errno.EPERM,  # execveat
    101: errno.EPERM,  # ptrace
    310: errno.EPERM,  # process_vm_readv
    311: errno.EPERM,  # process_vm_writev
    165: errno.EPERM,  # mount
    166: errno.EPERM,  # umount2
    155: errno.EPERM,  # pivot_root
    161: errno.EPERM,  # chroot
    272: errno.EPERM,  # unshare
    308: errno.EPERM,  # setns
    321: errno.EPERM,  # bpf
    298: errno.EPERM,  # perf_event_open
    323: errno.EPERM,  # userfaultfd
    425: errno.EPERM,  # io_uring_setup (its ops would bypass this filter)
    426: errno.EPERM,  # io_uring_enter
    427: errno.EPERM,  # io_uring_register
    248: errno.EPERM,  # add_key
    249: errno.EPERM,  # request_key
    250: errno.EPERM,  # keyctl
    303: errno.EPERM,  # name_to_handle_at
    304: errno.EPERM,  # open_by_handle_at
    246: errno.EPERM,  # kexec_load
    175: errno.EPERM,  # init_module
    313: errno.EPERM,  # finit_module
    435: errno.ENOSYS,  # clone3: flags live in memory BPF cannot read; glibc falls back to clone
    # Still a deny-list (an allow-list of what CPython + numpy + matplotlib call was not worth the risk
    # of breaking charts on another libc), extended after the outside attack with everything below:
    319: errno.EPERM,  # memfd_create: anonymous executable memory files
    447: errno.EPERM,  # memfd_secret
    428: errno.EPERM,  # open_tree   (the new mount API: a detached copy of a mount tree)
    429: errno.EPERM,  # move_mount
    430: errno.EPERM,  # fsopen
    431: errno.EPERM,  # fsconfig
    432: errno.EPERM,  # fsmount
    433: errno.EPERM,  # fspick
    442: errno.EPERM,  # mount_setattr
    457: errno.EPERM,  # statmount
    458: errno.EPERM,  # listmount
    434: errno.EPERM,  # pidfd_open  (handles on other processes)
    438: errno.EPERM,  # pidfd_getfd (steal another process's file descriptor)
    424: errno.EPERM,  # pidfd_send_signal
    440: errno.EPERM,  # process_madvise
    312: errno.EPERM,  # kcmp
    135: errno.EPERM,  # personality (ADDR_NO_RANDOMIZE and friends)
    103: errno.EPERM,  # syslog
    172: errno.EPERM,  # iopl
    173: errno.EPERM,  # ioperm
    163: errno.EPERM,  # acct
    167: errno.EPERM,  # swapon
    168: errno.EPERM,  # swapoff
    169: errno.EPERM,  # reboot
    170: errno.EPERM,  # sethostname
    171: errno.EPERM,  # setdomainname
    176: errno.EPERM,  # delete_module
    179: errno.EPERM,  # quotactl
    443: errno.EPERM,  # quotactl_fd
    159: errno.EPERM,  # adjtimex
    164: errno.EPERM,  # settimeofday
    227: errno.EPERM,  # clock_settime
    305: errno.EPERM,  # clock_adjtime
    212: errno.EPERM,  # lookup_dcookie
    300: errno.EPERM,  # fanotify_init
    256: errno.EPERM,  # migrate_pages
    279: errno.EPERM,  # move_pages
    153: errno.EPERM,  # vhangup
    134: errno.EPERM,  # uselib
}
_CLONE_NR = 56
_KILL_NR = 62


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def seccomp_supported() -> bool:
    return sys.platform == "linux" and platform.machine() == "x86_64"


def _build_filter() -> bytes:
    ld_w_abs, jeq_k, jset_k, jge_k, ret_k = 0x20, 0x15, 0x45, 0x35, 0x06
    prog = [
        _insn(ld_w_abs, 0, 0, 4),  # seccomp_data.arch
        _insn(jeq_k, 1, 0, _AUDIT_ARCH_X86_64),
        _insn(ret_k, 0, 0, _RET_KILL_PROCESS),
        _insn(ld_w_abs, 0, 0, 0),  # seccomp_data.nr
        _insn(jge_k, 0, 1, 0x40000000),  # x32 ABI: refuse wholesale
        _insn(ret_k, 0, 0, _RET_ERRNO | errno.EPERM),
    ]
    for nr, err in _DENY_X86_64.items():
        prog += [_insn(jeq_k, 0, 1, nr), _insn(ret_k, 0, 0, _RET_ERRNO | err)]
    # kill(pid <= 0) signals whole process groups or everything we may signal: refuse.
    prog += [
        _insn(jeq_k, 0, 4, _KILL_NR),
        _insn(ld_w_abs, 0, 0, 16),  # args[0] low 32 bits = pid
        _insn(jeq_k, 1, 0, 0),
        _insn(jset_k, 0, 1, 0x80000000),
        _insn(ret_k, 0, 0, _RET_ERRNO | errno.EPERM),
        _insn(ld_w_abs, 0, 0, 0),  # reload nr
    ]
    # clone: threads (CLONE_THREAD) are fine, new processes are not.
    prog += [
        _insn(jeq_k, 0, 4, _CLONE_NR),
        _insn(ld_w_abs, 0, 0, 16),  # args[0] low 32 bits = flags
        _insn(jset_k, 1, 0, _CLONE_THREAD),
        _insn(ret_k, 0, 0, _RET_ERRNO | errno.EPERM),
        _insn(ret_k, 0, 0, _RET_ALLOW),
        _insn(ret_k, 0, 0, _RET_ALLOW),
    ]
    return b"".join(prog)


def install_seccomp() -> None:
    """Install the filter on every thread of the process (TSYNC); irreversible."""
    if not seccomp_supported():
        raise ConfinementError("seccomp filter is only implemented for x86_64")
    code = _build_filter()
    buf = ctypes.create_string_buffer(code)
    prog = struct.pack("HxxxxxxQ", len(code) // 8, ctypes.addressof(buf))
    pbuf = ctypes.create_string_buffer(prog)
    seccomp_nr, set_mode_filter, flag_tsync = 317, 1, 1
    ret = _libc.syscall(seccomp_nr, set_mode_filter, flag_tsync, pbuf)
    if ret != 0:
        err = ctypes.get_errno()
        raise ConfinementError(f"seccomp: {os.strerror(err)} (ret {ret})")


def seccomp_active() -> bool:
    mode: int = _libc.prctl(21, 0, 0, 0, 0)  # PR_GET_SECCOMP
    return mode == 2  # SECCOMP_MODE_FILTER


# --- Python-level socket stub ------------------------------------------------------------------


def block_sockets() -> None:
    """Make the socket module refuse to work, so accidental network use fails with a clear message."""
    import _socket
    import socket

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "network access is disabled in the chart sandbox")

    for mod in (socket, _socket):
        for name in ("socket", "socketpair", "create_connection", "create_server", "fromfd", "getaddrinfo"):
            if hasattr(mod, name):
                setattr(mod, name, refuse)
