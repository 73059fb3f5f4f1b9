"""The fake's state: images in memory, what an upload ticket admits, and a "processor" that
reads the format and dimensions from the bytes. Thread-safe: the gRPC threads, the HTTP
threads and the test itself all come here, under one condition variable."""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from imagery.client.testing import _rules, _sniff
from imagery.v1 import image_pb2
from imagery.v1 import upload_service_pb2 as upb

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
Preset = tuple[str, int | None, int | None, bool]  # name, box width, box height, crop
PRESETS: tuple[Preset, ...] = (
    ("thumbnail", 150, 150, True),
    ("small", 400, 400, False),
    ("medium", 800, 800, False),
    ("large", 1600, 1600, False),
    ("original", None, None, False),
)
EXTENSIONS = {"webp": "webp", "jpeg": "jpg", "png": "png"}
_TERMINAL = (image_pb2.IMAGE_STATUS_READY, image_pb2.IMAGE_STATUS_FAILED)
# The fake decodes no pixels: every READY image gets the placeholder and colours of a
# mid-grey square, well-formed as imagery's (a ThumbHash; a BlurHash of the default 4x3
# components; "#rrggbb" colours whose shares sum to 1).
GREY_THUMBHASH = bytes.fromhex("20080207008788787078778877777887778a070000000000")
GREY_BLURHASH = "L1Eyb[~qfQ~q~qoffQoffQfQfQfQ"
GREY = "#808080"


def new_image_id() -> str:
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def _now(seconds: float | None = None) -> Timestamp:
    """A time as imagery stores it: to the microsecond (Postgres' timestamptz)."""
    stamp = Timestamp()
    stamp.FromMicroseconds(int((time.time() if seconds is None else seconds) * 1e6))
    return stamp


@dataclass
class Record:
    image: image_pb2.Image
    # Every upload URL handed out for the image (a retry with the request id gets one of its
    # own), each valid until it expires, as presigned URLs are: token -> expiry.
    tokens: dict[str, float]
    headers: dict[str, str]  # what the PUT must carry, exactly
    body: bytes | None = None
    put_headers: dict[str, str] | None = None  # what the admitted PUT carried
    created_ns: int = field(default_factory=time.time_ns)
    limits: dict[str, Any] | None = None  # the upload's own (CreateUploadUrl's `limits`)


def _size(
    width: int, height: int, box_w: int | None, box_h: int | None, crop: bool
) -> tuple[int, int]:
    if box_w is None or box_h is None:
        return width, height
    if crop:  # the box's shape, as large as the image allows
        fit = min(1.0, width / box_w, height / box_h)
        return max(1, round(box_w * fit)), max(1, round(box_h * fit))
    scale = min(1.0, box_w / width, box_h / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


class Store:
    def __init__(self, *, max_upload_bytes: int, presets: tuple[Preset, ...] = PRESETS) -> None:
        self.lock = threading.Condition()
        self.records: dict[str, Record] = {}
        self.request_ids: dict[str, tuple[str, str]] = {}  # id -> (fingerprint, image id)
        self.presets = presets
        self.max_upload_bytes = max_upload_bytes
        self.next_failures: deque[str] = deque()
        self.secret = secrets.token_bytes(16)
        self.on_uploaded: Callable[[str], None] = self.process

    # Uploads --------------------------------------------------------------------------

    def ticket(
        self,
        request: upb.CreateUploadUrlRequest,
        base_url: str,
        expiry: int,
        require_declared: bool,
    ) -> upb.CreateUploadUrlResponse:
        """CreateUploadUrl: validated like imagery, then a PENDING image and its PUT ticket."""
        content_type = _rules.content_type(request.content_type, _rules.ALLOWED_CONTENT_TYPES)
        name = _rules.file_name(request.file_name)
        if request.upload_method not in ("", "PUT"):
            raise _rules.invalid("upload_method", "is not PUT", "the fake takes PUT uploads only")
        size = request.size_bytes if request.HasField("size_bytes") else None
        _rules.declared(size, request.sha256, self.max_upload_bytes)
        labels = _rules.labels(request.labels)
        request_id = _rules.request_id(request.request_id)
        limits = _rules.upload_limits(request.limits) if request.HasField("limits") else None
        if require_declared and (size is None or not request.sha256):
            raise _rules.Refusal(
                grpc.StatusCode.FAILED_PRECONDITION,
                "DECLARATION_REQUIRED",
                "This project requires size_bytes and sha256 with every upload.",
                metadata={"project": "projects/default"},
            )
        fingerprint = repr((content_type, name, size, request.sha256, sorted(labels.items())))
        if limits is not None:
            fingerprint += repr(sorted(limits.items()))
        headers = {"Content-Type": content_type}
        if size is not None:
            headers["Content-Length"] = str(size)
        if request.sha256:
            digest = bytes.fromhex(request.sha256)
            headers["x-amz-checksum-sha256"] = base64.b64encode(digest).decode()
        with self.lock:
            image_id = self._earlier(request_id, fingerprint)
            if image_id is None:
                image_id = new_image_id()
                image = image_pb2.Image(
                    image_id=image_id,
                    status=image_pb2.IMAGE_STATUS_PENDING,
                    content_type=content_type,
                    file_name=name,
                    labels=labels,
                    create_time=_now(),
                    update_time=_now(),
                )
                self.records[image_id] = Record(image, {}, headers, limits=limits)
                if request_id:
                    self.request_ids[request_id] = (fingerprint, image_id)
            record = self.records[image_id]
            token, expires = secrets.token_hex(16), time.time() + expiry
            record.tokens[token] = expires
            return upb.CreateUploadUrlResponse(
                image_id=image_id,
                upload_url=f"{base_url}/uploads/{image_id}?X-Fake-Signature={token}",
                expire_time=_now(expires),
                required_headers=headers,
                upload_method="PUT",
                max_size_bytes=self.max_upload_bytes,
            )

    def _earlier(self, request_id: str, fingerprint: str) -> str | None:
        if not request_id or request_id not in self.request_ids:
            return None
        used, image_id = self.request_ids[request_id]
        if used != fingerprint:
            raise _rules.Refusal(
                grpc.StatusCode.INVALID_ARGUMENT,
                "REQUEST_ID_REUSED",
                f"request_id {request_id!r} was used for a call with other fields.",
                metadata={"request_id": request_id},
                violations=[("request_id", "already used for a different request")],
            )
        if image_id not in self.records:
            raise _rules.Refusal(
                grpc.StatusCode.NOT_FOUND,
                "IMAGE_NOT_FOUND",
                f"Image {image_id}, which request_id {request_id!r} created, has been deleted: "
                "send a new request_id to upload again.",
                metadata={"image_id": image_id, "request_id": request_id},
            )
        return image_id

    def receive(self, image_id: str, token: str, headers: Mapping[str, str], body: bytes) -> str:
        """An HTTP PUT to an upload URL: "" when admitted, else the storage's refusal."""
        with self.lock:
            record = self.records.get(image_id)
            expires = None if record is None else record.tokens.get(token)
            if record is None or expires is None:
                return "403 SignatureDoesNotMatch"
            if time.time() > expires:
                return "403 AccessDenied: Request has expired"
            sent = {k.lower(): v for k, v in headers.items()}
            for name, value in record.headers.items():
                if sent.get(name.lower()) != value:
                    return f"403 SignatureDoesNotMatch: {name} is not as signed"
            digest = record.headers.get("x-amz-checksum-sha256")
            if digest and base64.b64encode(hashlib.sha256(body).digest()).decode() != digest:
                return "400 BadDigest"
            record.put_headers = dict(headers)
            if record.image.status in _TERMINAL:
                return ""  # like S3: stored again, and the processor ignores it
            record.body = body
        self.on_uploaded(image_id)
        return ""

    # Processing -----------------------------------------------------------------------

    def process(self, image_id: str) -> None:
        """What the processor would make of the uploaded bytes: READY, or FAILED."""
        with self.lock:
            record = self.records[image_id]
            if record.body is None:
                raise ValueError(f"{image_id}: nothing was uploaded")
            if self.next_failures:
                self._end(record, failure=self.next_failures.popleft())
                return
            try:
                if len(record.body) > self.max_upload_bytes:
                    raise _sniff.Rejected("TOO_LARGE")
                sniffed = _sniff.sniff(record.body, record.image.content_type)
                frames = _sniff.frames(record.body, sniffed.format)
                if _rules.outside(record.limits, sniffed.width, sniffed.height, frames):
                    raise _sniff.Rejected("DIMENSIONS_EXCEEDED")
            except _sniff.Rejected as rejected:
                self._end(record, failure=rejected.reason)
                return
            image = record.image
            image.width, image.height = sniffed.width, sniffed.height
            image.size_bytes = len(record.body)
            image.sha256 = hashlib.sha256(record.body).hexdigest()
            image.detected_format = sniffed.format
            image.placeholder.thumbhash = GREY_THUMBHASH
            image.placeholder.blurhash = GREY_BLURHASH
            image.average_color = GREY
            image.dominant_colors.add(color=GREY, fraction=1.0)
            fallback = "png" if sniffed.alpha else "jpeg"
            for name, box_w, box_h, crop in self.presets:
                width, height = _size(sniffed.width, sniffed.height, box_w, box_h, crop)
                for fmt in ("webp", fallback):
                    image.variants.add(
                        name=name,
                        format=fmt,
                        content_type=f"image/{fmt}",
                        width=width,
                        height=height,
                        size_bytes=len(record.body),
                    )
            self._end(record)

    def mark(self, image_id: str, status: int) -> None:
        with self.lock:
            record = self.records[image_id]
            if record.image.status in _TERMINAL:
                raise ValueError(f"{image_id} is already terminal")
            record.image.status = status  # type: ignore[assignment]
            record.image.update_time.CopyFrom(_now())
            self.lock.notify_all()

    def fail(self, image_id: str, reason: str) -> None:
        with self.lock:
            record = self.records[image_id]
            if record.image.status in _TERMINAL:
                raise ValueError(f"{image_id} is already terminal")
            self._end(record, failure=reason)

    def _end(self, record: Record, failure: str | None = None) -> None:
        if failure is None:
            record.image.status = image_pb2.IMAGE_STATUS_READY
        else:
            record.image.status = image_pb2.IMAGE_STATUS_FAILED
            record.image.failure_reason = failure
            del record.image.variants[:]
        record.image.update_time.CopyFrom(_now())
        self.lock.notify_all()

    # Reading --------------------------------------------------------------------------

    def get(self, image_id: str) -> image_pb2.Image:
        with self.lock:
            record = self.records.get(_rules.require_image_id(image_id))
            if record is None:
                raise _rules.not_found(image_id)
            return _copy(record.image)

    def watch(self, image_id: str, active: Callable[[], bool]) -> Iterator[image_pb2.Image]:
        """The current state, then each change, until terminal (or deleted: NOT_FOUND)."""
        seen: image_pb2.Image | None = None
        while active():
            with self.lock:
                record = self.records.get(_rules.require_image_id(image_id))
                if record is None:
                    raise _rules.not_found(image_id)
                if seen is not None and record.image == seen:
                    self.lock.wait(0.2)
                    continue
                seen = _copy(record.image)
            yield seen
            if seen.status in _TERMINAL:
                return

    def delete(self, image_id: str) -> bool:
        with self.lock:
            deleted = self.records.pop(_rules.require_image_id(image_id), None)
            self.lock.notify_all()
            return deleted is not None

    def relabel(
        self, image_id: str, paths: list[str], labels: Mapping[str, str]
    ) -> image_pb2.Image:
        _rules.require_image_id(image_id, "image.image_id")
        if not paths or any(p not in ("labels", "*") for p in paths):
            raise _rules.invalid("update_mask", "must name labels", 'send "labels" (or "*")')
        checked = _rules.labels(labels, "image.labels")
        with self.lock:
            record = self.records.get(image_id)
            if record is None:
                raise _rules.not_found(image_id)
            record.image.labels.clear()
            record.image.labels.update(checked)
            record.image.update_time.CopyFrom(_now())
            self.lock.notify_all()
            return _copy(record.image)

    def sign(
        self, base_url: str, image: image_pb2.Image, variant: image_pb2.Variant, ttl: int
    ) -> tuple[str, int]:
        """A URL the fake's HTTP endpoint serves until it expires (bucketed like imagery's)."""
        bucket = min(300, ttl)
        expires = math.ceil((time.time() + ttl) / bucket) * bucket
        path = f"/variants/{image.sha256}/{variant.name}.{EXTENSIONS[variant.format]}"
        signature = self.signature(path, expires)
        return f"{base_url}{path}?Expires={expires}&Signature={signature}", expires

    def signature(self, path: str, expires: int) -> str:
        return hmac.new(self.secret, f"{path}:{expires}".encode(), "sha256").hexdigest()[:32]

    def served(self, sha256: str) -> bytes | None:
        with self.lock:
            for record in self.records.values():
                if record.image.sha256 == sha256 and record.body is not None:
                    return record.body
        return None


def _copy(image: image_pb2.Image) -> image_pb2.Image:
    copied = image_pb2.Image()
    copied.CopyFrom(image)
    return copied
