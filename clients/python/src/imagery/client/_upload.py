"""The bytes' side of an upload: what is sent (in memory or a file), its size and SHA-256, and
the HTTP PUT to the presigned URL, with the standard library only."""

from __future__ import annotations

import hashlib
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from imagery.client._version import __version__
from imagery.client.errors import UploadFailed
from imagery.v1 import upload_service_pb2

Source = bytes | bytearray | memoryview | str | os.PathLike[str]
_CHUNK = 1 << 20
_PUT_ATTEMPTS = 3  # a PUT of the same bytes to the same URL is safe to repeat


@dataclass(frozen=True)
class Payload:
    """What an upload sends: `body` in memory, or the file at `path`."""

    body: bytes | None
    path: Path | None
    size: int
    sha256: str  # lower-case hex
    file_name: str

    def open(self) -> BinaryIO | bytes:
        if self.body is not None:
            return self.body
        assert self.path is not None
        return self.path.open("rb")


def prepare(source: Source, file_name: str | None) -> Payload:
    """Bytes are sent as they are; a str or path names a file, read twice (hashed, then
    streamed), never held in memory whole."""
    if isinstance(source, bytes | bytearray | memoryview):
        body = bytes(source)
        digest = hashlib.sha256(body).hexdigest()
        return Payload(body, None, len(body), digest, file_name or "upload")
    if not isinstance(source, str | os.PathLike):
        raise TypeError(f"upload takes bytes or a file path, not {type(source).__name__}")
    path = Path(source)
    hasher = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return Payload(None, path, size, hasher.hexdigest(), file_name or path.name)


def create_request(
    payload: Payload,
    content_type: str,
    *,
    labels: Mapping[str, str] | None,
    request_id: str | None,
    declare: bool,
    limits: upload_service_pb2.UploadLimits | None = None,
) -> upload_service_pb2.CreateUploadUrlRequest:
    """CreateUploadUrl for `payload`. Declared (the default), the URL signs the size and
    checksum, so storage admits these bytes and no others. The request id makes a retried
    call answer the same image instead of creating a second one. `limits` are this upload's
    own, stricter than the project's."""
    request = upload_service_pb2.CreateUploadUrlRequest(
        content_type=content_type,
        file_name=payload.file_name,
        labels=dict(labels or {}),
        request_id=request_id or str(uuid.uuid4()),
    )
    if limits is not None:
        request.limits.CopyFrom(limits)
    if declare:
        request.size_bytes = payload.size
        request.sha256 = payload.sha256
    return request


def put(
    ticket: upload_service_pb2.CreateUploadUrlResponse,
    payload: Payload,
    content_type: str,
    *,
    timeout: float,
) -> None:
    """PUT the bytes with exactly the headers the ticket requires (signed into the URL), plus
    the Content-Length any PUT has. Retried on no answer or a 5xx; a 4xx is final."""
    if ticket.upload_method not in ("", "PUT"):
        raise UploadFailed(f"the server answered an upload method {ticket.upload_method!r}")
    headers = dict(ticket.required_headers)
    lower = {k.lower() for k in headers}
    if "content-type" not in lower:
        headers["Content-Type"] = content_type
    if "content-length" not in lower:
        headers["Content-Length"] = str(payload.size)
    if "user-agent" not in lower:  # instead of urllib's own
        headers["User-Agent"] = f"imagery-client/{__version__}"
    for attempt in range(1, _PUT_ATTEMPTS + 1):
        try:
            _put_once(ticket.upload_url, headers, payload, timeout)
            return
        except UploadFailed as failure:
            transient = failure.http_status is None or failure.http_status >= 500
            if not transient or attempt == _PUT_ATTEMPTS:
                raise
            time.sleep(0.25 * 2**attempt)


def _put_once(url: str, headers: dict[str, str], payload: Payload, timeout: float) -> None:
    if not url.startswith(("https://", "http://")):
        raise UploadFailed(f"the upload URL {url[:40]!r} is not http(s)")
    body = payload.open()
    request = urllib.request.Request(url, data=body, headers=headers, method="PUT")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            answer.read()
    except urllib.error.HTTPError as refused:
        text = refused.read(500).decode("utf-8", "replace")
        raise UploadFailed(
            f"storage refused the upload with HTTP {refused.code}: {text[:200]}",
            http_status=refused.code,
            metadata={"body": text},
        ) from refused
    except (urllib.error.URLError, OSError) as unreachable:
        raise UploadFailed(f"the upload could not be sent: {unreachable}") from unreachable
    finally:
        if not isinstance(body, bytes):
            body.close()
