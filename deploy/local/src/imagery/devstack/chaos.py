"""Faults for chaos tests: an endpoint that stops answering (a TCP proxy that can be paused),
a Postgres that crashes and comes back with its data, and a whole processor killed at once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading

from imagery.devstack.postgres import EmbeddedPostgres
from imagery.devstack.services import ServiceProcess

_CHUNK = 64 * 1024


class PausableProxy:
    """Forwards 127.0.0.1:<port> to `upstream` from a thread of its own. `pause()` makes the
    endpoint stop answering, as a stopped server does: connections are still accepted by the
    kernel, but nothing is read, forwarded or answered until `resume()`, when everything goes
    on where it stopped (a client that gave up meanwhile has closed its connection)."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="pausable-proxy", daemon=True
        )
        self._running = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.port = 0
        self.accepted = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PausableProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def pause(self) -> None:
        self._loop.call_soon_threadsafe(self._running.clear)

    def resume(self) -> None:
        self._loop.call_soon_threadsafe(self._running.set)

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(TimeoutError):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _listen(self) -> None:
        self._running.set()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self.accepted += 1
        upstream: asyncio.StreamWriter | None = None
        try:
            await self._running.wait()
            upstream_reader, upstream = await asyncio.open_connection(*self._upstream)
            pipes = {
                asyncio.ensure_future(self._pipe(reader, upstream)),
                asyncio.ensure_future(self._pipe(upstream_reader, writer)),
            }
            _, unfinished = await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            for pipe in unfinished:
                pipe.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
        except OSError:
            pass
        finally:
            for side in (writer, upstream):
                if side is not None:
                    side.close()
            self._connections.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while True:
                await self._running.wait()
                data = await reader.read(_CHUNK)
                if not data:
                    return
                await self._running.wait()
                writer.write(data)
                await writer.drain()


class CrashablePostgres(EmbeddedPostgres):
    """An embedded Postgres that can also stop as a crash does."""

    def crash(self) -> None:
        """Immediate shutdown: every backend killed, no shutdown checkpoint; the next start
        runs crash recovery from the WAL (committed work survives: the server must be
        `durable`)."""
        self._pg("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")


def kill_all(process: ServiceProcess) -> int:
    """SIGKILL a service's whole process group at once (the processor, its job host and its
    jobs: a container killed by the node), then reap it; returns its pid."""
    assert process.proc is not None
    pid = process.proc.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    process.proc.wait(30)
    process.stop()  # only joins the log pump now
    return pid
