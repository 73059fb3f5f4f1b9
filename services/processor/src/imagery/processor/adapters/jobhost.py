"""The job host: the process every image job is forked from. `isolation.IsolatedRunner`
starts it with an empty environment (`python -m imagery.processor.adapters.jobhost FD`),
so nothing it or its jobs hold is worth stealing: no database URL, no AWS credentials, no keys.

The interpreter runs with -E -s (no PYTHON* variables, no user site-packages). It imports
Pillow and the rendering code and warms them up once, marks itself non-dumpable
(a job cannot read its memory or /proc files, nor the processor's), then forks one process per
job on request. Requests come over the control socket FD with the job's own socket attached
(SCM_RIGHTS); the host answers {"job", "pid"} and, when a job process ends, {"pid", "exit"}.

A job process sets its limits, reads its request, imports the function it names, then loads a
seccomp filter: from that moment it may not open a file, create a socket, connect, exec or
ptrace. It runs the function and writes the result back as data (jobwire), then exits.
"""

from __future__ import annotations

import ctypes
import errno
import importlib
import json
import os
import resource
import selectors
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

import pyseccomp

from imagery.common.errors import FailureReason
from imagery.processor.adapters import jobwire
from imagery.processor.imaging import Rejected

PRELOAD = (
    "PIL.Image",
    "PIL.JpegImagePlugin",
    "PIL.PngImagePlugin",
    "PIL.WebPImagePlugin",
    "PIL.GifImagePlugin",
    "PIL.AvifImagePlugin",
    "pillow_heif",  # HEIC/HEIF: registered as Pillow's "HEIF" by adapters.verify
    "imagery.processor.adapters.render",
    "imagery.processor.adapters.warmup",  # renders tiny images: first-use set-up done once
)
PR_SET_DUMPABLE = 4
# Denied with EPERM once the job has its request: no new files, sockets, programs, processes
# or tracing, and nothing that reaches another process (io_uring would open files and sockets
# behind seccomp's back; pidfds and signals reach the host and the processor).
DENIED_SYSCALLS = (
    "open",
    "openat",
    "openat2",
    "creat",
    "socket",
    "socketpair",
    "connect",
    "bind",
    "listen",
    "accept",
    "accept4",
    "execve",
    "execveat",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "fork",
    "vfork",
    "pidfd_open",
    "pidfd_getfd",
    "pidfd_send_signal",
    "tkill",
)
CLONE_THREAD = 0x00010000
MAX_REQUEST_BLOB_BYTES = 1024**3


def not_dumpable() -> None:
    """No core dumps, and no other process of this user reads our memory or /proc files."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def sandbox() -> None:
    refuse = pyseccomp.ERRNO(errno.EPERM)
    jail = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    for name in DENIED_SYSCALLS:
        if _exists(name):
            jail.add_rule(refuse, name)
    own = os.getpid()
    # Signals only to itself; resource limits only its own; threads, never processes.
    jail.add_rule(refuse, "kill", pyseccomp.Arg(0, pyseccomp.NE, own))
    jail.add_rule(refuse, "tgkill", pyseccomp.Arg(0, pyseccomp.NE, own))
    jail.add_rule(refuse, "prlimit64", pyseccomp.Arg(0, pyseccomp.NE, 0))
    jail.add_rule(refuse, "clone", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, CLONE_THREAD, 0))
    if _exists("clone3"):  # its flags live in memory seccomp cannot read: threads use clone
        jail.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")
    jail.load()


def _exists(name: str) -> bool:
    """Whether this architecture has the syscall (aarch64 has no open, fork or vfork)."""
    try:
        return int(pyseccomp.resolve_syscall(pyseccomp.system_arch(), name)) >= 0
    except (RuntimeError, ValueError, OSError):
        return False


def _callee(name: str) -> Callable[..., Any]:
    module, _, function = name.partition(":")
    found = getattr(importlib.import_module(module), function)
    if not callable(found):
        raise TypeError(f"{name} is not callable")
    return found  # type: ignore[no-any-return]


def _job(fd: int, memory_bytes: int, cpu_seconds: int) -> None:
    """The job process: never returns."""
    code = 0
    try:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
        with socket.socket(fileno=fd) as sock:
            request = _read_request(sock)
            fn = _callee(str(request["call"]))
            sandbox()
            response = _run(fn, request.get("args", []))
            response["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            jobwire.send(sock, response)
    except BaseException:  # noqa: BLE001 - the parent reads the exit code
        code = 70
    finally:
        os._exit(code)


def _read_request(sock: socket.socket) -> dict[str, Any]:
    request = jobwire.receive(sock, max_blob_bytes=MAX_REQUEST_BLOB_BYTES)
    if not isinstance(request, dict):
        raise jobwire.WireError("a request that is not an object")
    return request


def _run(fn: Callable[..., Any], args: list[Any]) -> dict[str, Any]:
    try:
        return {"ok": fn(*args)}
    except Rejected as rejected:
        return {"rejected": [str(rejected.reason), rejected.detail]}
    except MemoryError:
        detail = "the image needs more memory than a job may use"
        return {"rejected": [str(FailureReason.MEMORY_LIMIT), detail]}
    except Exception as exc:  # noqa: BLE001 - reported to the parent as a failed job
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}


def _answer(control: socket.socket, message: dict[str, Any]) -> None:
    control.sendall(json.dumps(message).encode() + b"\n")


def serve(control: socket.socket) -> None:
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the processor decides when we stop
    events = selectors.DefaultSelector()
    events.register(control, selectors.EVENT_READ, "control")
    events.register(wake_read, selectors.EVENT_READ, "child")
    children: set[int] = set()
    while True:
        for key, _ in events.select():
            if key.data == "child":
                os.read(wake_read, 4096)
                _reap(control, children)
                continue
            message, fds, _, _ = socket.recv_fds(control, 4096, 1)
            if not message:
                return  # the processor went away: so do we
            request = json.loads(message)
            if "kill" in request:  # only a live child of ours: never a pid reused since
                for fd in fds:
                    os.close(fd)
                if int(request["kill"]) in children:
                    os.kill(int(request["kill"]), signal.SIGKILL)
                continue
            if len(fds) != 1:
                for fd in fds:
                    os.close(fd)
                continue
            try:
                pid = os.fork()
            except OSError:  # out of processes or memory: the job is retried later
                os.close(fds[0])
                _answer(control, {"job": request["job"], "pid": None})
                continue
            if pid == 0:
                events.close()
                control.close()
                signal.set_wakeup_fd(-1)
                os.close(wake_read)
                os.close(wake_write)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                _job(fds[0], int(request["memory_bytes"]), int(request["cpu_seconds"]))
            children.add(pid)
            os.close(fds[0])
            _answer(control, {"job": request["job"], "pid": pid})
        _reap(control, children)


def _reap(control: socket.socket, children: set[int]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        _answer(control, {"pid": pid, "exit": os.waitstatus_to_exitcode(status)})


def preload() -> None:
    """Everything a job may import: once a job is sandboxed it cannot open a module file, so
    Pillow's lazy imports (EXIF goes through TiffImagePlugin, an MPO check through
    MpoImagePlugin, ...) and the text codecs metadata is decoded with are all loaded here."""
    import encodings
    import pkgutil

    import PIL

    names = [*PRELOAD]
    names += [f"PIL.{m.name}" for m in pkgutil.iter_modules(PIL.__path__)]
    names += [f"encodings.{m.name}" for m in pkgutil.iter_modules(encodings.__path__)]
    for name in names:
        if name.startswith(("PIL.ImageTk", "PIL.ImageQt", "encodings.mbcs", "encodings.oem")):
            continue  # GUI toolkits and Windows-only codecs
        if name in ("PIL.__main__", "PIL.report"):
            continue  # they print Pillow's feature report when imported
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a missing optional module costs nothing
            if name in PRELOAD:
                print(f"imagery job host: cannot preload {name}: {exc!r}", file=sys.stderr)
    from PIL import Image

    Image.init()


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    preload()
    not_dumpable()
    serve(control)


if __name__ == "__main__":
    main()
