"""What crosses between the processor and its job processes: length-prefixed JSON plus raw
byte blobs, never pickle. A job process runs decoders on hostile bytes, so what it sends back
is parsed as data only: known shapes, a fixed set of types, bounded sizes.

A frame is a 4-byte big-endian header length, the JSON header {"value": ..., "blobs": [sizes]},
then the blobs. In a value, bytes are {"$b": index into the blobs}, tuples {"$tuple": [...]},
and the dataclasses jobs take and return {"$t": name, "f": {field: value}}.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import struct
import time
from typing import Any

from imagery.common.presets import Preset
from imagery.processor.imaging import (
    Insights,
    Limits,
    Processed,
    Rendered,
    RenderSpec,
    Verified,
)

TYPES: dict[str, type[Any]] = {
    t.__name__: t for t in (Limits, RenderSpec, Preset, Verified, Rendered, Processed, Insights)
}
MAX_HEADER_BYTES = 1024 * 1024
_LENGTH = struct.Struct(">I")


class WireError(ValueError):
    """A frame that is not what the other side should have sent."""


def encode(value: Any) -> bytes:
    blobs: list[bytes] = []
    header = json.dumps({"value": _to_json(value, blobs), "blobs": [len(b) for b in blobs]})
    raw = header.encode()
    return b"".join([_LENGTH.pack(len(raw)), raw, *blobs])


def send(sock: socket.socket, value: Any) -> None:
    sock.sendall(encode(value))


def receive(sock: socket.socket, *, max_blob_bytes: int, deadline: float | None = None) -> Any:
    """One frame's value; WireError when it is malformed or larger than allowed, TimeoutError
    when it has not all arrived by `deadline` (time.monotonic())."""
    (size,) = _LENGTH.unpack(_read(sock, _LENGTH.size, deadline))
    if size > MAX_HEADER_BYTES:
        raise WireError(f"a header of {size} bytes")
    try:
        header = json.loads(_read(sock, size, deadline))
        sizes = header["blobs"]
        value = header["value"]
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise WireError(f"not a frame header: {type(exc).__name__}") from None
    if not isinstance(sizes, list) or not all(isinstance(n, int) and n >= 0 for n in sizes):
        raise WireError("blob sizes are not a list of sizes")
    if sum(sizes) > max_blob_bytes:
        raise WireError(f"{sum(sizes)} bytes of blobs")
    blobs = [_read(sock, n, deadline) for n in sizes]
    return _from_json(value, blobs, depth=0)


def _read(sock: socket.socket, size: int, deadline: float | None) -> bytes:
    """Exactly `size` bytes."""
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the answer did not arrive in time")
            sock.settimeout(left)
        count = sock.recv_into(view[got:], min(size - got, 1 << 20))
        if not count:
            raise EOFError("the other side closed the connection mid-frame")
        got += count
    return bytes(buffer)


def _to_json(value: Any, blobs: list[bytes]) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        blobs.append(bytes(value))
        return {"$b": len(blobs) - 1}
    if isinstance(value, tuple):
        return {"$tuple": [_to_json(v, blobs) for v in value]}
    if isinstance(value, list):
        return [_to_json(v, blobs) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json(v, blobs) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and type(value).__name__ in TYPES:
        fields = {
            f.name: _to_json(getattr(value, f.name), blobs) for f in dataclasses.fields(value)
        }
        return {"$t": type(value).__name__, "f": fields}
    raise TypeError(f"{type(value).__name__} does not cross to or from a job")


def _from_json(value: Any, blobs: list[bytes], *, depth: int) -> Any:
    if depth > 32:
        raise WireError("nested too deeply")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [_from_json(v, blobs, depth=depth + 1) for v in value]
    if not isinstance(value, dict):
        raise WireError(f"a {type(value).__name__} in a frame")
    if "$b" in value:
        index = value["$b"]
        if not isinstance(index, int) or not 0 <= index < len(blobs):
            raise WireError("a blob index out of range")
        return blobs[index]
    if "$tuple" in value:
        items = value["$tuple"]
        if not isinstance(items, list):
            raise WireError("a tuple that is not a list")
        return tuple(_from_json(v, blobs, depth=depth + 1) for v in items)
    if "$t" in value:
        kind = TYPES.get(str(value["$t"]))
        fields = value.get("f")
        if kind is None or not isinstance(fields, dict):
            raise WireError(f"an unknown type {str(value['$t'])[:40]!r}")
        try:
            return kind(**{k: _from_json(v, blobs, depth=depth + 1) for k, v in fields.items()})
        except TypeError as exc:
            raise WireError(f"a {kind.__name__} with the wrong fields: {exc}") from None
    return {str(k): _from_json(v, blobs, depth=depth + 1) for k, v in value.items()}
