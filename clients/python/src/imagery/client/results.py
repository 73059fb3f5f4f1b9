"""What the clients return beyond plain `imagery.v1` messages, and the request building and
answer folding that the sync and async clients share."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Literal, NamedTuple

from google.protobuf import field_mask_pb2

from imagery.client.errors import ImageBlocked, ImageFailed
from imagery.v1 import delivery_service_pb2 as dpb
from imagery.v1 import errors_pb2, image_pb2
from imagery.v1 import upload_service_pb2 as upb

MAX_URL_BATCH = 50  # image ids per BatchGetDownloadUrls call
MAX_IMAGE_BATCH = 100  # image ids per BatchGetImages call
Format = Literal["webp", "fallback", "avif"]
_FORMATS: dict[str, image_pb2.VariantFormat.ValueType] = {
    "webp": image_pb2.VARIANT_FORMAT_WEBP,
    "fallback": image_pb2.VARIANT_FORMAT_FALLBACK,
    "avif": image_pb2.VARIANT_FORMAT_AVIF,
}


class DownloadFailure(NamedTuple):
    """An image and variant that got no URL, and why: IMAGE_NOT_FOUND, IMAGE_NOT_READY,
    IMAGE_FAILED, UNKNOWN_VARIANT, IMAGE_CONTENT_LOST, VARIANT_PENDING (being rendered: ask
    again shortly; later servers may add reasons)."""

    image_id: str
    variant: str
    reason: str


class DownloadUrls(Mapping[str, Mapping[str, str]]):
    """Signed URLs by image id, then variant: `urls[image_id]["small"]`. Only images that got
    at least one URL are keys; `failures` lists every image and variant that got none, and
    `entries` the answers as sent (with expiry, content type, and `fallback`/`served_variant`
    when a variant not rendered yet is served by the nearest one meanwhile)."""

    def __init__(
        self, entries: Sequence[dpb.DownloadUrl], failures: Sequence[DownloadFailure]
    ) -> None:
        self.entries = tuple(entries)
        self.failures = tuple(failures)
        self._urls: dict[str, dict[str, str]] = {}
        for entry in self.entries:
            self._urls.setdefault(entry.image_id, {})[entry.variant] = entry.url

    def __getitem__(self, image_id: str) -> Mapping[str, str]:
        return self._urls[image_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._urls)

    def __len__(self) -> int:
        return len(self._urls)

    def __repr__(self) -> str:
        return f"DownloadUrls({self._urls!r}, failures={list(self.failures)!r})"


class ImageBatch(NamedTuple):
    """BatchGetImages' answer: the images found, in request order, and the ids not found."""

    images: list[image_pb2.Image]
    not_found_image_ids: list[str]


def reason_name(value: int) -> str:
    """An ErrorReason value as the reason string ErrorInfo carries ("IMAGE_NOT_READY")."""
    try:
        return errors_pb2.ErrorReason.Name(value).removeprefix("ERROR_REASON_")  # type: ignore[arg-type]
    except ValueError:
        return str(value)  # a reason newer than this client


def _unique(ids: Iterable[str]) -> list[str]:
    if isinstance(ids, str):
        raise TypeError("pass a list of image ids, not one string")
    return list(dict.fromkeys(ids))


def _chunks(ids: list[str], size: int) -> list[list[str]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)] or [[]]


def download_requests(
    image_ids: Iterable[str], variants: str | Sequence[str], format: Format | None
) -> list[dpb.BatchGetDownloadUrlsRequest]:
    """One request per 50 distinct ids (an empty list still asks once, for the server's
    NO_IMAGE_IDS)."""
    names = [variants] if isinstance(variants, str) else list(variants)
    wanted = _FORMATS[format] if format is not None else image_pb2.VARIANT_FORMAT_UNSPECIFIED
    # `variant` too, so that a server older than `variants` still answers the first one.
    first = names[0] if names else ""
    return [
        dpb.BatchGetDownloadUrlsRequest(
            image_ids=chunk, variant=first, variants=names, format=wanted
        )
        for chunk in _chunks(_unique(image_ids), MAX_URL_BATCH)
    ]


def fold_download_urls(answers: Iterable[dpb.BatchGetDownloadUrlsResponse]) -> DownloadUrls:
    entries: list[dpb.DownloadUrl] = []
    failures: list[DownloadFailure] = []
    for answer in answers:
        entries += answer.download_urls
        failures += [
            DownloadFailure(f.image_id, f.variant, reason_name(f.reason)) for f in answer.failures
        ]
    return DownloadUrls(entries, failures)


def image_requests(image_ids: Iterable[str]) -> list[dpb.BatchGetImagesRequest]:
    return [
        dpb.BatchGetImagesRequest(image_ids=chunk)
        for chunk in _chunks(_unique(image_ids), MAX_IMAGE_BATCH)
    ]


def fold_images(answers: Iterable[dpb.BatchGetImagesResponse]) -> ImageBatch:
    batch = ImageBatch([], [])
    for answer in answers:
        batch.images.extend(answer.images)
        batch.not_found_image_ids.extend(answer.not_found_image_ids)
    return batch


def labels_request(image_id: str, labels: Mapping[str, str]) -> upb.UpdateImageRequest:
    return upb.UpdateImageRequest(
        image=image_pb2.Image(image_id=image_id, labels=dict(labels)),
        update_mask=field_mask_pb2.FieldMask(paths=["labels"]),
    )


def download_url_request(
    image_id: str, variant: str, format: Format | None
) -> dpb.GetDownloadUrlRequest:
    wanted = _FORMATS[format] if format is not None else image_pb2.VARIANT_FORMAT_UNSPECIFIED
    return dpb.GetDownloadUrlRequest(image_id=image_id, variant=variant, format=wanted)


def terminal(image: image_pb2.Image) -> bool:
    """READY (returned) or FAILED or BLOCKED (raised): nothing will change any more."""
    if image.status == image_pb2.IMAGE_STATUS_FAILED:
        raise failed(image)
    if image.status == image_pb2.IMAGE_STATUS_BLOCKED:
        raise ImageBlocked(
            f"Image {image.image_id} was taken down by an operator and will never be served.",
            reason="BLOCKED",
            metadata={"image_id": image.image_id},
            image=image,
        )
    return image.status == image_pb2.IMAGE_STATUS_READY


def failed(image: image_pb2.Image) -> ImageFailed:
    reason = image.failure_reason or "no reason recorded"
    return ImageFailed(
        f"Image {image.image_id} failed ({reason}) and will never be ready: upload it again "
        "once the cause is fixed.",
        reason="IMAGE_FAILED",
        metadata={"image_id": image.image_id, "failure_reason": image.failure_reason},
        image=image,
    )


def status_name(image: image_pb2.Image | None) -> str:
    if image is None:
        return "unknown"
    return image_pb2.ImageStatus.Name(image.status).removeprefix("IMAGE_STATUS_")
