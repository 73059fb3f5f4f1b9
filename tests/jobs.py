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
