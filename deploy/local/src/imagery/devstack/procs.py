"""Small process helpers for the local stack and the tests: free ports, pid files, waiting."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def wait_for(
    check: Callable[[], bool], what: str, timeout: float = 30.0, interval: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} did not come up within {timeout:.0f} s")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def reap_stale(pid_dir: Path, marker: str = "imagery") -> list[int]:
    """Terminate processes a previous, crashed run left behind (by their pid files), but only
    when their command line still looks like ours. Returns the pids that were stopped."""
    stopped = []
    for pid_file in sorted(pid_dir.glob("*.pid")) if pid_dir.exists() else []:
        with contextlib.suppress(ValueError, OSError):
            pid = int(pid_file.read_text().strip())
            if pid_alive(pid) and (marker in _cmdline(pid) or "moto" in _cmdline(pid)):
                os.killpg(os.getpgid(pid), signal.SIGTERM)
                stopped.append(pid)
        pid_file.unlink(missing_ok=True)
    deadline = time.monotonic() + 10
    while any(pid_alive(p) for p in stopped) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in stopped:
        if pid_alive(pid):
            with contextlib.suppress(OSError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
    return stopped
