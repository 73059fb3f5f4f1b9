"""DeliveryService's answers from the fake's store: signed URLs (one, or a batch with its
failures), batches of images, and ListImages with its filter and page tokens."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from imagery.client.testing import _rules
from imagery.client.testing._filter import parse_filter
from imagery.client.testing._store import Store
from imagery.v1 import delivery_service_pb2 as dpb
from imagery.v1 import errors_pb2, image_pb2

# format preference -> the encodings that satisfy it, best first
_PREFERENCES = {
    image_pb2.VARIANT_FORMAT_UNSPECIFIED: ("webp",),
    image_pb2.VARIANT_FORMAT_WEBP: ("webp",),
    image_pb2.VARIANT_FORMAT_FALLBACK: ("jpeg", "png"),
    image_pb2.VARIANT_FORMAT_AVIF: ("avif",),
}
_STATUS_NAMES = {
    image_pb2.IMAGE_STATUS_PENDING: "pending",
    image_pb2.IMAGE_STATUS_PROCESSING: "processing",
    image_pb2.IMAGE_STATUS_READY: "ready",
    image_pb2.IMAGE_STATUS_FAILED: "failed",
}


class Delivery:
    def __init__(self, store: Store, base_url: Callable[[], str], url_ttl: int) -> None:
        self._store = store
        self._base_url = base_url
        self._ttl = url_ttl

    def _presets(self) -> list[str]:
        return [name for name, *_ in self._store.presets]

    def _pick(self, image: image_pb2.Image, name: str, fmt: int) -> image_pb2.Variant | None:
        formats = _PREFERENCES.get(fmt)  # type: ignore[call-overload]
        if formats is None:
            raise _rules.invalid("format", f"is {fmt}", "send a VariantFormat value")
        for wanted in formats:
            for variant in image.variants:
                if variant.name == name and variant.format == wanted:
                    return variant
        return None

    def download_url(self, request: dpb.GetDownloadUrlRequest) -> dpb.GetDownloadUrlResponse:
        _rules.require_image_id(request.image_id)
        _rules.preset(request.variant, self._presets())
        image = self._store.get(request.image_id)
        if image.status != image_pb2.IMAGE_STATUS_READY:
            raise _rules.Refusal(
                grpc.StatusCode.FAILED_PRECONDITION,
                "IMAGE_NOT_READY",
                f"Image {image.image_id} is {_STATUS_NAMES[image.status]}, not ready.",
                metadata={"image_id": image.image_id, "status": _STATUS_NAMES[image.status]},
            )
        variant = self._pick(image, request.variant, request.format)
        if variant is None:
            names = ", ".join(dict.fromkeys(v.name for v in image.variants))
            refusal = _rules.invalid("variant", f"this image has {names}", "ask for one of them")
            refusal.reason = "UNKNOWN_VARIANT"
            refusal.metadata = {"image_id": image.image_id, "available": names}
            raise refusal
        url, expires = self._store.sign(self._base_url(), image, variant, self._ttl)
        return dpb.GetDownloadUrlResponse(
            image_id=image.image_id,
            variant=variant.name,
            url=url,
            expire_time=Timestamp(seconds=expires),
            content_type=variant.content_type,
        )

    def download_urls(
        self, request: dpb.BatchGetDownloadUrlsRequest
    ) -> dpb.BatchGetDownloadUrlsResponse:
        ids = _rules.batch(request.image_ids, _rules.MAX_URL_BATCH)
        names = _rules.variants(request.variant, request.variants, self._presets())
        self._pick(image_pb2.Image(), "", request.format)  # an unknown format is refused
        answer = dpb.BatchGetDownloadUrlsResponse()
        for image_id in ids:
            try:
                image: image_pb2.Image | None = self._store.get(image_id)
            except _rules.Refusal:
                image = None
            for name in names:
                reason = self._add_url(answer, image, name, request.format)
                if reason:
                    answer.failures.add(
                        image_id=image_id,
                        variant=name,
                        reason=errors_pb2.ErrorReason.Value(f"ERROR_REASON_{reason}"),
                    )
        signed = {u.image_id for u in answer.download_urls}
        if answer.failures:
            answer.not_found_image_ids.extend(i for i in ids if i not in signed)
        return answer

    def _add_url(
        self,
        answer: dpb.BatchGetDownloadUrlsResponse,
        image: image_pb2.Image | None,
        name: str,
        fmt: int,
    ) -> str:
        """Adds the URL; or returns why there is none."""
        if image is None:
            return "IMAGE_NOT_FOUND"
        if image.status == image_pb2.IMAGE_STATUS_FAILED:
            return "IMAGE_FAILED"
        if image.status != image_pb2.IMAGE_STATUS_READY:
            return "IMAGE_NOT_READY"
        variant = self._pick(image, name, fmt)
        if variant is None:
            return "UNKNOWN_VARIANT"
        url, expires = self._store.sign(self._base_url(), image, variant, self._ttl)
        answer.download_urls.add(
            image_id=image.image_id,
            variant=name,
            url=url,
            expire_time=Timestamp(seconds=expires),
            content_type=variant.content_type,
        )
        return ""

    def images(self, request: dpb.BatchGetImagesRequest) -> dpb.BatchGetImagesResponse:
        ids = _rules.batch(request.image_ids, _rules.MAX_IMAGE_BATCH)
        answer = dpb.BatchGetImagesResponse()
        for image_id in ids:
            try:
                answer.images.append(self._store.get(image_id))
            except _rules.Refusal:
                answer.not_found_image_ids.append(image_id)
        return answer

    def list(self, request: dpb.ListImagesRequest) -> dpb.ListImagesResponse:
        if not 0 <= request.page_size <= 1000:
            raise _rules.invalid("page_size", f"is {request.page_size}", "ask for 1 to 1000")
        size = request.page_size or 100
        match = parse_filter(request.filter)
        digest = hashlib.sha256(request.filter.encode()).hexdigest()[:16]
        after = _read_token(request.page_token, digest) if request.page_token else None
        with self._store.lock:
            rows = sorted(
                ((r.created_ns, image_id) for image_id, r in self._store.records.items()),
                reverse=True,
            )
            images = [
                self._store.records[image_id].image
                for created, image_id in rows
                if (after is None or (created, image_id) < after)
                and match(self._store.records[image_id].image)
            ]
            page = [self._store.get(i.image_id) for i in images[:size]]
        answer = dpb.ListImagesResponse(images=page)
        if len(images) > size:
            last = page[-1].image_id
            position = {"n": self._store.records[last].created_ns, "i": last, "f": digest}
            raw = json.dumps(position).encode()
            answer.next_page_token = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        return answer


def _read_token(token: str, digest: str) -> tuple[int, str]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        position, made_for = (int(raw["n"]), str(raw["i"])), raw["f"]
    except (ValueError, KeyError, TypeError):
        raise _rules.invalid(
            "page_token", "is not a token ListImages made", "send next_page_token as received"
        ) from None
    if made_for != digest:
        raise _rules.invalid("page_token", "was made for another filter", "send the same filter")
    return position
