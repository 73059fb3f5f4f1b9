"""proto <-> domain for DeliveryService (an Image maps in imagery.common.grpc.images, shared
with UploadService's UpdateImage)."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from imagery.common.errors import InvalidArgument
from imagery.common.grpc.images import image_to_proto, timestamp
from imagery.delivery.urls import BatchResult, DownloadUrl
from imagery.delivery.use_cases import ImagePage, ImagesResult
from imagery.v1 import delivery_service_pb2 as pb
from imagery.v1 import errors_pb2, image_pb2

PREFERENCE_FROM_PROTO: dict[int, str] = {
    image_pb2.VARIANT_FORMAT_UNSPECIFIED: "webp",
    image_pb2.VARIANT_FORMAT_WEBP: "webp",
    image_pb2.VARIANT_FORMAT_FALLBACK: "fallback",
    image_pb2.VARIANT_FORMAT_AVIF: "avif",
}


def preference(value: int) -> str:
    """The format preference a request's `format` asks for; an unknown value is refused (a
    client built from a newer proto may send one: it must not silently get WebP)."""
    found = PREFERENCE_FROM_PROTO.get(value)
    if found is None:
        raise InvalidArgument(
            "format",
            f"is {value}, not a VariantFormat this server knows",
            "send VARIANT_FORMAT_WEBP, VARIANT_FORMAT_FALLBACK or VARIANT_FORMAT_AVIF, or leave "
            "it unset",
        )
    return found


def _reason(name: str) -> errors_pb2.ErrorReason.ValueType:
    return errors_pb2.ErrorReason.Value(f"ERROR_REASON_{name}")


def images_response(result: ImagesResult) -> pb.BatchGetImagesResponse:
    return pb.BatchGetImagesResponse(
        images=[image_to_proto(r) for r in result.images],
        not_found_image_ids=result.not_found_image_ids,
    )


def list_response(page: ImagePage) -> pb.ListImagesResponse:
    return pb.ListImagesResponse(
        images=[image_to_proto(r) for r in page.images], next_page_token=page.next_page_token
    )


def batch_response(result: BatchResult) -> pb.BatchGetDownloadUrlsResponse:
    """Built in place with `add()` and attribute assignment (a standalone message passed to the
    constructor is copied again; keyword arguments cost more than setting the fields), with one
    Timestamp per distinct expiry (`make bench` measures a batch)."""
    response = pb.BatchGetDownloadUrlsResponse(not_found_image_ids=result.not_found_image_ids)
    stamps: dict[datetime, Timestamp] = {}
    add = response.download_urls.add
    for u in result.download_urls:
        stamp = stamps.get(u.expire_time)
        if stamp is None:
            stamp = stamps[u.expire_time] = Timestamp()
            stamp.FromDatetime(u.expire_time)
        item = add()
        item.image_id, item.variant, item.url = u.image_id, u.variant, u.url
        item.content_type = u.content_type
        item.expire_time.CopyFrom(stamp)
        if u.fallback:
            item.fallback, item.served_variant = True, u.served
    add_failure = response.failures.add
    for f in result.failures:
        add_failure(image_id=f.image_id, variant=f.variant, reason=_reason(f.reason))
    return response


def get_download_url_response(url: DownloadUrl) -> pb.GetDownloadUrlResponse:
    return pb.GetDownloadUrlResponse(
        image_id=url.image_id,
        variant=url.variant,
        url=url.url,
        expire_time=timestamp(url.expire_time),
        content_type=url.content_type,
        fallback=url.fallback,
        served_variant=url.served,
    )
