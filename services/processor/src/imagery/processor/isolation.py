"""Image work in isolated processes: one child per job, forked from a forkserver that has
Pillow preloaded (~18 ms per job here), with an address-space limit and a CPU-time limit set
in the child. A file that explodes or loops kills only its own child; nothing is shared, so
no other job notices (a shared ProcessPoolExecutor marks the whole pool broken, failing every
job in flight, when one worker dies). `fork` is never used: this process has native threads
(gRPC, the event loop's executors), and fork after threads has been seen to deadlock.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import resource
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

PRELOAD = [
    "PIL.Image",
    "PIL.JpegImagePlugin",
    "PIL.PngImagePlugin",
    "PIL.WebPImagePlugin",
    "PIL.GifImagePlugin",
    "PIL.AvifImagePlugin",
    # verify + render + ImageCms (and its sRGB profile): ~31 ms a job when left to the child
    "imagery.processor.render",
    # `_child` itself is unpickled by reference: this module, and asyncio with it, was
    # imported again in every job (a trivial job took ~39 ms)
    "imagery.processor.isolation",
    # renders two tiny images of our own: the libraries' first-use set-up, ~10 ms a job
    "imagery.processor.warmup",
]


@dataclass(frozen=True, slots=True)
class JobLimits:
    memory_bytes: int = 1024 * 1024 * 1024
    cpu_seconds: int = 30
    wall_seconds: float = 60.0


@dataclass(frozen=True, slots=True)
class JobResult:
    value: Any
    peak_rss_bytes: int  # the job process's peak resident memory


class JobKilled(Exception):
    """The child died (a limit, a crash) or overran its wall-clock time."""

    peak_rss_bytes: int | None = None

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _child(
    conn: multiprocessing.connection.Connection,
    limits: JobLimits,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        result: tuple[str, Any] = ("ok", fn(*args))
    except MemoryError:
        result = ("killed", ("MEMORY_LIMIT", "the image needs more memory than a job may use"))
    except BaseException as exc:  # noqa: BLE001 - everything crosses the pipe, the parent decides
        result = ("error", exc)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    conn.send((*result, peak_rss))
    conn.close()


class IsolatedRunner:
    def __init__(self, slots: int, limits: JobLimits) -> None:
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(PRELOAD)
        self._limits = limits
        self._threads = ThreadPoolExecutor(max(1, slots), thread_name_prefix="isolated-job")

    def warm_up(self) -> None:
        """Start the forkserver now rather than on the first upload."""
        self._run(len, (b"",))

    async def run(self, fn: Callable[..., Any], *args: Any) -> JobResult:
        """fn(*args) in a fresh limited process; raises what fn raised, or JobKilled. Either
        way the exception carries `peak_rss_bytes` when the child reported it."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, self._run, fn, args)

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> JobResult:
        receiver, sender = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_child, args=(sender, self._limits, fn, args), daemon=True
        )
        process.start()
        sender.close()
        try:
            if not receiver.poll(self._limits.wall_seconds):
                raise JobKilled(
                    "PROCESSING_TIMEOUT", f"no result within {self._limits.wall_seconds:.0f} s"
                )
            status, value, peak_rss = receiver.recv()
        except EOFError:
            process.join(5)
            raise JobKilled(
                _death_reason(process.exitcode), f"job process exited with {process.exitcode}"
            ) from None
        finally:
            receiver.close()
            if process.is_alive():
                process.kill()
            process.join(5)
            with contextlib.suppress(ValueError):
                process.close()
        if status == "ok":
            return JobResult(value, peak_rss)
        error = JobKilled(*value) if status == "killed" else value
        error.peak_rss_bytes = peak_rss
        raise error

    def close(self) -> None:
        self._threads.shutdown(wait=True, cancel_futures=True)


def _death_reason(exitcode: int | None) -> str:
    if exitcode in (-signal.SIGXCPU, -signal.SIGKILL):
        return "CPU_LIMIT" if exitcode == -signal.SIGXCPU else "MEMORY_LIMIT"
    return "PROCESSING_CRASHED"
