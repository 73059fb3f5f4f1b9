"""Module-level jobs for the isolation tests (the child process imports them by name)."""

from __future__ import annotations

import os
import sys
import time


def burn_cpu() -> None:
    while True:
        pass


def allocate() -> int:
    return len(bytearray(4 * 1024**3))


def crash() -> None:
    os._exit(3)


def killed_from_outside() -> None:
    """What the kernel's OOM killer does to a job when the pod runs out of memory."""
    os.kill(os.getpid(), 9)


def pid() -> int:
    return os.getpid()


def sleep_then_return(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value


def running_interval(seconds: float) -> tuple[float, float]:
    """(start, end) on the wall clock of a job that sleeps `seconds`."""
    started = time.time()
    time.sleep(seconds)
    return started, time.time()


def preloaded_modules() -> list[str]:
    """What the job process had imported before it started (inherited from the forkserver)."""
    return sorted(name for name in sys.modules if name.startswith("imagery."))


def try_to(what: str, target: str = "") -> str:
    """What a compromised decoder would try; returns how it ended."""
    import socket

    try:
        if what == "open":
            with open(target, "rb") as handle:
                handle.read(1)
        elif what == "socket":
            socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
        elif what == "connect":
            socket.create_connection(("127.0.0.1", int(target)), timeout=1).close()
        elif what == "exec":
            os.execv("/bin/true", ["/bin/true"])  # noqa: S606
        elif what == "signal":
            os.kill(int(target), 0)  # 0 only checks: the call alone must be refused
        elif what == "fork" and os.fork() == 0:
            os._exit(0)
    except OSError as exc:
        return f"refused: {type(exc).__name__}"
    return "done"


def environment() -> dict[str, str]:
    return dict(os.environ)
