"""Image work in isolated processes: one child per job, forked from a forkserver that has
Pillow preloaded, with an address-space limit and a CPU-time limit set in the child. A file
that explodes or loops kills only its own child; nothing is shared, so no other job notices
(a shared ProcessPoolExecutor marks the whole pool broken, failing every job in flight, when
one worker dies). `fork` is never used: this process has native threads (gRPC, the event
loop's executors), and fork after threads has been seen to deadlock.
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

from imagery.common.errors import FailureReason
from imagery.processor.adapters.render import verify_and_render
from imagery.processor.imaging import Limits, Rejected, RenderSpec
from imagery.processor.ports import JobResult

PRELOAD = [
    "PIL.Image",
    "PIL.JpegImagePlugin",
    "PIL.PngImagePlugin",
    "PIL.WebPImagePlugin",
    "PIL.GifImagePlugin",
    "PIL.AvifImagePlugin",
    # verify + render + ImageCms (and its sRGB profile), otherwise imported by every job
    "imagery.processor.adapters.render",
    # `_child` itself is unpickled by reference: without this, this module (and asyncio with
    # it) would be imported again in every job
    "imagery.processor.adapters.isolation",
    # renders tiny images of our own: the libraries' first-use set-up, done once
    "imagery.processor.adapters.warmup",
]


@dataclass(frozen=True, slots=True)
class JobLimits:
    memory_bytes: int = 1024 * 1024 * 1024
    cpu_seconds: int = 30
    wall_seconds: float = 60.0


@dataclass(frozen=True, slots=True)
class Finished:
    value: Any
    peak_rss_bytes: int  # the job process's peak resident memory


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
        result = (
            "error",
            Rejected(FailureReason.MEMORY_LIMIT, "the image needs more memory than a job may use"),
        )
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

    async def verify_and_render(
        self, data: bytes, content_type: str, limits: Limits, spec: RenderSpec
    ) -> JobResult:
        finished = await self.run(verify_and_render, data, content_type, limits, spec)
        return JobResult(finished.value, finished.peak_rss_bytes)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Finished:
        """fn(*args) in a fresh limited process. Raises `Rejected` when fn rejected the input
        or the process died or overran (with the job's peak memory when it reported one),
        and otherwise what fn raised."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, self._run, fn, args)

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Finished:
        receiver, sender = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_child, args=(sender, self._limits, fn, args), daemon=True
        )
        process.start()
        sender.close()
        try:
            if not receiver.poll(self._limits.wall_seconds):
                raise Rejected(
                    FailureReason.PROCESSING_TIMEOUT,
                    f"no result within {self._limits.wall_seconds:.0f} s",
                )
            status, value, peak_rss = receiver.recv()
        except EOFError:
            process.join(5)
            raise Rejected(
                _death_reason(process.exitcode),
                f"job process exited with {process.exitcode}",
                by_the_kernel=process.exitcode == -signal.SIGKILL,
            ) from None
        finally:
            receiver.close()
            if process.is_alive():
                process.kill()
            process.join(5)
            with contextlib.suppress(ValueError):
                process.close()
        if status == "ok":
            return Finished(value, peak_rss)
        if isinstance(value, Rejected):
            raise Rejected(value.reason, value.detail, peak_rss_bytes=peak_rss)
        raise value

    def close(self) -> None:
        self._threads.shutdown(wait=True, cancel_futures=True)


def _death_reason(exitcode: int | None) -> FailureReason:
    if exitcode == -signal.SIGXCPU:
        return FailureReason.CPU_LIMIT
    if exitcode == -signal.SIGKILL:
        return FailureReason.MEMORY_LIMIT
    return FailureReason.PROCESSING_CRASHED
