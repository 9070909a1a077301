"""A warmed template process that forks new workers in milliseconds instead of importing for seconds.

Importing matplotlib + pandas costs ~2.5 s of CPU here, which made refilling the pool (and every cold
start) slow. The zygote imports once, never runs user code, and on request forks a child that then
confines itself exactly like a freshly started worker (worker.become_worker): its own namespaces, jail,
uid, seccomp and rlimits. Requests travel over a SOCK_SEQPACKET socket with the job's pipe ends
attached (SCM_RIGHTS), so the parent talks to each worker directly.

Trade-off (as for Android's zygote): all workers share the zygote's memory layout (no fresh ASLR per
run). The scripts already run arbitrary Python, so this adds little for an attacker here.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import threading
from typing import Any, NoReturn


def serve(plan: dict[str, Any]) -> NoReturn:
    """The zygote's loop (child side): one request in, one forked worker out, until the parent goes."""
    # No PR_SET_PDEATHSIG: it fires when the *thread* that started us ends. The parent process dying
    # closes its socket end instead, and recv() returning b"" ends this loop.
    from sandbox.confine import set_process_title

    set_process_title(str(plan.get("title", "rag-bot-sandbox-zygote")))
    sock = socket.socket(fileno=int(plan["control_fd"]))
    base = {k: v for k, v in plan.items() if k not in ("mode", "control_fd", "title")}
    sock.send(b'{"ready": true}')
    while True:
        _reap()
        try:
            msg, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, 4)
        except OSError:
            os._exit(0)
        if not msg:
            os._exit(0)  # the parent closed its end
        if len(fds) != 4:
            for fd in fds:
                os.close(fd)
            sock.send(b'{"error": "expected 4 file descriptors"}')
            continue
        pid = os.fork()
        if pid == 0:
            try:
                sock.detach()
                _child(fds, {**base, **json.loads(msg), "mode": "worker"})
            finally:
                os._exit(70)
        for fd in fds:
            os.close(fd)
        sock.send(json.dumps({"pid": pid}).encode())


def _child(fds: list[int], plan: dict[str, Any]) -> NoReturn:
    from sandbox.confine import set_process_title
    from sandbox.worker import become_worker

    set_process_title(f"rag-bot-sandbox-worker {plan.get('host_dir', '')}")
    os.setsid()  # its own process group: the runner kills the whole tree with killpg(pid)
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]  # no clash with 0..3 while dup2-ing
    for target, fd in enumerate(high):
        os.dup2(fd, target)
    os.closerange(4, 1 << 16)  # the control socket and anything else of the zygote's
    become_worker({**plan, "status_fd": 3})


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


class Zygote:
    """Parent-side handle: start the zygote process and ask it for workers (thread-safe)."""

    def __init__(self, command: list[str], control_fd: int, sock: socket.socket, env: dict[str, str],
                 cwd: str) -> None:  # fmt: skip
        self._sock = sock
        self._lock = threading.Lock()
        self._ready = False
        self.proc = subprocess.Popen(
            command, pass_fds=(control_fd,), env=env, cwd=cwd, start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        )  # fmt: skip

    @classmethod
    def start(cls, plan_command: Any, env: dict[str, str], cwd: str, title: str) -> Zygote:
        """`plan_command(extra)` builds the argv (IsolationPlan.command); `title` names it in `ps`."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            command = plan_command({"mode": "zygote", "control_fd": child.fileno(), "title": title})
            return cls(command, child.fileno(), parent, env, cwd)
        finally:
            child.close()

    def spawn(self, job_plan: dict[str, Any], timeout_s: float) -> tuple[int, list[int]]:
        """Fork one worker; returns its pid (= process group) and [stdin_w, stdout_r, stderr_r, status_r]."""
        pipes = [os.pipe() for _ in range(4)]
        child_ends = [pipes[0][0]] + [r_w[1] for r_w in pipes[1:]]
        parent_ends = [pipes[0][1]] + [r_w[0] for r_w in pipes[1:]]
        try:
            with self._lock:
                self._sock.settimeout(timeout_s)
                if not self._ready:
                    if json.loads(self._sock.recv(4096) or b"{}").get("ready") is not True:
                        raise OSError("zygote failed to start")
                    self._ready = True
                socket.send_fds(self._sock, [json.dumps(job_plan).encode()], child_ends)
                reply = json.loads(self._sock.recv(4096) or b"{}")
        except (OSError, ValueError):
            for fd in parent_ends:
                os.close(fd)
            raise
        finally:
            for fd in child_ends:
                os.close(fd)
        if "pid" not in reply:
            for fd in parent_ends:
                os.close(fd)
            raise OSError(f"zygote refused: {reply.get('error', reply)}")
        return int(reply["pid"]), parent_ends

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        try:
            self._sock.close()
        finally:
            try:
                os.killpg(self.proc.pid, 9)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()
