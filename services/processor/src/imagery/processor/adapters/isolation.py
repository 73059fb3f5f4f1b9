"""Image work in isolated processes: one process per job, forked from the job host
(`jobhost.py`), which has Pillow preloaded and warmed up, holds no secrets (it starts with an
empty environment) and cannot be read by its jobs. Each job gets an address-space and a
CPU-time limit and a seccomp filter (no new files, sockets, exec or ptrace). A file that
explodes or loops kills only its own process; nothing is shared, so no other job notices.

Bytes go in and bytes plus JSON come out over a socket per job (jobwire): nothing a job sends
back is unpickled, and what comes back is checked before anyone uses it. The processor never
forks itself (it has native threads; fork after threads has been seen to deadlock): the host
is started with exec, and forks only itself, single-threaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from imagery.common.errors import FailureReason
from imagery.processor.adapters import jobwire
from imagery.processor.adapters.job_answers import Finished, checked, death_reason, verdict
from imagery.processor.adapters.jobhost import not_dumpable
from imagery.processor.adapters.render import verify_and_render
from imagery.processor.imaging import Limits, Rejected, RenderSpec
from imagery.processor.ports import JobResult, RetryLater

MAX_RESULT_BYTES = 256 * 1024**2  # every variant of the largest image allowed, with room
_EXIT_WAIT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class JobLimits:
    memory_bytes: int = 1024 * 1024 * 1024
    cpu_seconds: int = 30
    wall_seconds: float = 60.0


class _Pending:
    def __init__(self) -> None:
        self.pid: int | None = None
        self.exit: int | None = None
        self.started = threading.Event()
        self.ended = threading.Event()


class _JobHost:
    """The host process and the control socket to it; one reader thread routes its answers."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-E",
                "-s",
                "-m",
                "imagery.processor.adapters.jobhost",
                str(theirs.fileno()),
            ],
            pass_fds=(theirs.fileno(),),
            env={},
            start_new_session=True,  # no signal meant for the processor's group reaches it
            stdin=subprocess.DEVNULL,
            close_fds=True,
        )
        theirs.close()
        self.control = ours
        self.alive = True
        self._send = threading.Lock()
        self._jobs: dict[int, _Pending] = {}
        self._pids: dict[int, _Pending] = {}
        self._table = threading.Lock()
        self._ids = itertools.count(1)
        threading.Thread(target=self._read, name="job-host-reader", daemon=True).start()

    def kill(self, pending: _Pending) -> None:
        """SIGKILL the job's process, through the host: it only kills a live child of its own,
        so a pid reused since can never be hit."""
        if pending.pid is None or pending.ended.is_set():
            return
        with self._send, contextlib.suppress(OSError):
            socket.send_fds(self.control, [json.dumps({"kill": pending.pid}).encode()], [])

    def start(self, job_socket: socket.socket, limits: JobLimits) -> _Pending:
        pending = _Pending()
        job = next(self._ids)
        with self._table:
            self._jobs[job] = pending
        request = {
            "job": job,
            "memory_bytes": limits.memory_bytes,
            "cpu_seconds": limits.cpu_seconds,
        }
        with self._send:
            socket.send_fds(self.control, [json.dumps(request).encode()], [job_socket.fileno()])
        return pending

    def _read(self) -> None:
        with contextlib.suppress(OSError), self.control.makefile("rb") as lines:
            for line in lines:
                self._route(json.loads(line))
        self.alive = False
        with self._table:  # every job still waiting has lost its process
            for pending in [*self._jobs.values(), *self._pids.values()]:
                pending.started.set()
                pending.ended.set()

    def _route(self, message: dict[str, Any]) -> None:
        with self._table:
            if "job" in message:
                pending = self._jobs.pop(int(message["job"]), None)
                if pending is not None:
                    pid = message["pid"]
                    if isinstance(pid, int):
                        pending.pid = pid
                        self._pids[pid] = pending
                    else:  # the host could not fork
                        pending.ended.set()
                    pending.started.set()
            elif "pid" in message:
                pending = self._pids.pop(int(message["pid"]), None)
                if pending is not None:
                    pending.exit = int(message["exit"])
                    pending.ended.set()

    def close(self) -> None:
        with contextlib.suppress(OSError):  # the reader's file object holds the descriptor too
            self.control.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.control.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


class _SharedHost:
    """The one job host of a runner and its lanes: started on first use, again after it died."""

    def __init__(self) -> None:
        self._host: _JobHost | None = None
        self._lock = threading.Lock()

    @property
    def current(self) -> _JobHost | None:
        return self._host

    def get(self) -> _JobHost:
        with self._lock:
            if self._host is None or not self._host.alive:
                if self._host is not None:
                    self._host.close()
                self._host = _JobHost()
            return self._host

    def close(self) -> None:
        with self._lock:
            if self._host is not None:
                self._host.close()
                self._host = None


class IsolatedRunner:
    def __init__(self, slots: int, limits: JobLimits, *, host: _SharedHost | None = None) -> None:
        self._limits = limits
        self._threads = ThreadPoolExecutor(max(1, slots), thread_name_prefix="isolated-job")
        self._owns_host = host is None
        self._shared = host or _SharedHost()

    def lane(self, slots: int) -> IsolatedRunner:
        """Jobs on the same host, with `slots` of their own: a job in the lane never waits for
        a slot this runner's jobs hold, nor theirs for the lane's (renders beside uploads).
        Closing the lane leaves the host to this runner."""
        return IsolatedRunner(slots, self._limits, host=self._shared)

    @property
    def _host(self) -> _JobHost | None:
        """The job host now (None before the first job)."""
        return self._shared.current

    def warm_up(self) -> None:
        """Start the job host now (it warms the codecs up) rather than on the first upload,
        and make this process unreadable to its jobs."""
        not_dumpable()
        self._run("builtins:len", (b"",))

    async def verify_and_render(
        self, data: bytes, content_type: str, limits: Limits, spec: RenderSpec
    ) -> JobResult:
        finished = await self.run(verify_and_render, data, content_type, limits, spec)
        return JobResult(checked(finished.value, spec), finished.peak_rss_bytes)

    async def run(self, fn: Callable[..., Any] | str, *args: Any) -> Finished:
        """fn(*args) in a fresh limited process; fn is a module-level function (or its
        "module:name"), args and result are what jobwire carries. Raises `Rejected` when fn
        rejected the input or the process died or overran, `JobFailed` when fn raised."""
        name = fn if isinstance(fn, str) else f"{fn.__module__}:{fn.__qualname__}"
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, self._run, name, args)

    def _run(self, name: str, args: tuple[Any, ...]) -> Finished:
        host = self._shared.get()
        ours, theirs = socket.socketpair()
        with ours:
            try:
                pending = host.start(theirs, self._limits)
            finally:
                theirs.close()
            deadline = time.monotonic() + self._limits.wall_seconds
            try:
                ours.settimeout(self._limits.wall_seconds)
                ours.sendall(jobwire.encode({"call": name, "args": list(args)}))
                ours.shutdown(socket.SHUT_WR)
                response = jobwire.receive(ours, max_blob_bytes=MAX_RESULT_BYTES, deadline=deadline)
            except TimeoutError:
                self._end(host, pending)
                raise Rejected(
                    FailureReason.PROCESSING_TIMEOUT,
                    f"no result within {self._limits.wall_seconds:.0f} s",
                ) from None
            except (EOFError, OSError, jobwire.WireError) as exc:
                self._end(host, pending)
                raise self._death(pending, exc) from None
        self._end(host, pending, grace=1.0)  # answered: it exits by itself, or is made to
        return verdict(response)

    def _end(self, host: _JobHost, pending: _Pending, *, grace: float = 0.0) -> None:
        """The job's process is gone when this returns (or the host is)."""
        pending.started.wait(_EXIT_WAIT_SECONDS)
        if not pending.ended.wait(grace):
            host.kill(pending)
            pending.ended.wait(_EXIT_WAIT_SECONDS)

    def _death(self, pending: _Pending, exc: BaseException) -> Exception:
        """The job process ended without a usable answer: what killed it. When the host
        itself is gone, nothing is known about the file: the upload is retried."""
        code = pending.exit
        if code is None:
            return RetryLater(f"the job host went away ({type(exc).__name__})")
        if isinstance(exc, jobwire.WireError) and code == 0:
            return Rejected(FailureReason.PROCESSING_CRASHED, f"a malformed answer: {exc}")
        return Rejected(
            death_reason(code),
            f"job process exited with {code}",
            by_the_kernel=code == -signal.SIGKILL,
        )

    def close(self) -> None:
        self._threads.shutdown(wait=True, cancel_futures=True)
        if self._owns_host:
            self._shared.close()
