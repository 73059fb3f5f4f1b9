"""A counting Postgres proxy on 127.0.0.1: a service process given its address as
DATABASE_URL reaches Postgres through it, and it counts every statement the process sends,
by connection (the `application_name` of the startup message: the pool is `imagery`, the
change bus `imagery-changes`) and by what the statement reads. It parses only what clients
send (simple Query; Parse, Bind and Execute of the extended protocol, as asyncpg uses) and
passes the bytes on unchanged; replies are copied back as they come."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from urllib.parse import urlsplit, urlunsplit

_SSL_REQUEST, _GSS_REQUEST, _CANCEL_REQUEST = 80877103, 80877104, 80877102


class StatementCounter:
    """Every statement seen, as (time.perf_counter(), application_name, category), where
    `classify` names the category of a statement's SQL text."""

    def __init__(self, classify: Callable[[str], str]) -> None:
        self._events: list[tuple[float, str, str]] = []
        self._classify = classify
        self._lock = threading.Lock()  # counted on the proxy's thread, read on the caller's

    def count(self, application: str, sql: str) -> None:
        event = (time.perf_counter(), application, self._classify(sql))
        with self._lock:
            self._events.append(event)

    def within(self, windows: Iterable[tuple[float, float]]) -> Counter[tuple[str, str]]:
        """(application_name, category) -> statements sent during any of `windows`."""
        spans = list(windows)
        with self._lock:
            events = list(self._events)
        return Counter(
            (app, category)
            for at, app, category in events
            if any(start <= at < end for start, end in spans)
        )


@contextlib.contextmanager
def counting_proxy(dsn: str, counter: StatementCounter) -> Iterator[str]:
    """Serve the proxy on a free local port, on a thread and event loop of its own (so a
    caller blocked waiting for a process to stop cannot stall that process's queries), and
    yield `dsn` rewritten to go through it, with sslmode=disable so statements can be read."""
    upstream = urlsplit(dsn)
    target = (upstream.hostname or "127.0.0.1", upstream.port or 5432)
    loop = asyncio.new_event_loop()
    started: concurrent.futures.Future[int] = concurrent.futures.Future()
    stop = asyncio.Event()
    thread = threading.Thread(
        target=lambda: loop.run_until_complete(_serve(target, counter, started, stop)),
        name="pgwire-proxy",
        daemon=True,
    )
    thread.start()
    port = started.result(timeout=10)
    netloc = upstream.netloc.rsplit("@", 1)
    credentials = f"{netloc[0]}@" if len(netloc) == 2 else ""
    query = "&".join(q for q in (upstream.query, "sslmode=disable") if q)
    try:
        yield urlunsplit(upstream._replace(netloc=f"{credentials}127.0.0.1:{port}", query=query))
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


async def _serve(
    target: tuple[str, int],
    counter: StatementCounter,
    started: concurrent.futures.Future[int],
    stop: asyncio.Event,
) -> None:
    writers: set[asyncio.StreamWriter] = set()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
            writers.add(up_writer)
            await _relay(reader, writer, up_reader, up_writer, counter)
        except OSError:
            pass  # Postgres went away: the client sees its connection closed
        finally:
            writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    started.set_result(server.sockets[0].getsockname()[1])
    await stop.wait()
    server.close()
    for writer in writers:  # the relays end when their sockets close
        writer.close()
    await asyncio.sleep(0.1)


async def _relay(
    client_r: asyncio.StreamReader,
    client_w: asyncio.StreamWriter,
    server_r: asyncio.StreamReader,
    server_w: asyncio.StreamWriter,
    counter: StatementCounter,
) -> None:
    back = asyncio.create_task(_copy(server_r, client_w))
    try:
        await _client_to_server(client_r, server_w, server_r, client_w, counter, back)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # either side hung up
    finally:
        back.cancel()
        await asyncio.gather(back, return_exceptions=True)
        for writer in (client_w, server_w):
            writer.close()


async def _client_to_server(
    client_r: asyncio.StreamReader,
    server_w: asyncio.StreamWriter,
    server_r: asyncio.StreamReader,
    client_w: asyncio.StreamWriter,
    counter: StatementCounter,
    back: asyncio.Task[None],
) -> None:
    application = "(unknown)"
    while True:  # untyped start-up packets: SSL/GSS negotiation, then the startup message
        head = await client_r.readexactly(8)
        length, code = struct.unpack("!ii", head)
        body = await client_r.readexactly(length - 8)
        server_w.write(head + body)
        if code == _CANCEL_REQUEST:
            await server_w.drain()
            await back
            return
        if code not in (_SSL_REQUEST, _GSS_REQUEST):
            application = _startup_parameters(body).get("application_name", application)
            break
    statements: dict[bytes, str] = {}  # prepared statement name -> SQL
    portals: dict[bytes, str] = {}  # portal name -> SQL
    while True:
        head = await client_r.readexactly(5)
        kind, length = head[:1], struct.unpack("!i", head[1:])[0]
        body = await client_r.readexactly(length - 4)
        server_w.write(head + body)
        if kind == b"Q":
            counter.count(application, body.rstrip(b"\0").decode(errors="replace"))
        elif kind == b"P":
            name, rest = body.split(b"\0", 1)
            statements[name] = rest.split(b"\0", 1)[0].decode(errors="replace")
        elif kind == b"B":
            portal, statement, _ = body.split(b"\0", 2)
            portals[portal] = statements.get(statement, "")
        elif kind == b"E":
            counter.count(application, portals.get(body.split(b"\0", 1)[0], ""))
        elif kind == b"X":
            await server_w.drain()
            return
        await server_w.drain()


def _startup_parameters(body: bytes) -> dict[str, str]:
    parts = body.split(b"\0")
    return {
        parts[i].decode(errors="replace"): parts[i + 1].decode(errors="replace")
        for i in range(0, len(parts) - 1, 2)
        if parts[i]
    }


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
