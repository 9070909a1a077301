"""Helpers shared by the sandbox tests: leak detection through /proc (no psutil) and PNG parsing."""

from __future__ import annotations

import os
import struct
import time


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk; asserts the PNG signature."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def leftover_processes(marker: str) -> list[int]:
    """Pids whose command line contains `marker`, excluding this test process."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                if marker.encode() in fh.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def assert_no_leftovers(*markers: str, grace_s: float = 2.0) -> None:
    """No process mentioning any marker survives; `grace_s` covers the kernel tearing a PID namespace down."""
    markers = tuple(m for m in markers if m)
    deadline = time.monotonic() + grace_s
    while any(leftover_processes(m) for m in markers) and time.monotonic() < deadline:
        time.sleep(0.05)
    for marker in markers:
        assert leftover_processes(marker) == [], f"processes left behind for {marker}"
