"""proto <-> domain for DeliveryService."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from imagery.common.domain import ImageRecord, ImageStatus
from imagery.delivery.use_cases import BatchResult, DownloadUrl
from imagery.v1 import delivery_service_pb2 as pb
from imagery.v1 import image_pb2

STATUS_TO_PROTO = {
    ImageStatus.PENDING: image_pb2.IMAGE_STATUS_PENDING,
    ImageStatus.PROCESSING: image_pb2.IMAGE_STATUS_PROCESSING,
    ImageStatus.READY: image_pb2.IMAGE_STATUS_READY,
    ImageStatus.FAILED: image_pb2.IMAGE_STATUS_FAILED,
}
PREFERENCE_FROM_PROTO = {
    image_pb2.VARIANT_FORMAT_UNSPECIFIED: "webp",
    image_pb2.VARIANT_FORMAT_WEBP: "webp",
    image_pb2.VARIANT_FORMAT_FALLBACK: "fallback",
    image_pb2.VARIANT_FORMAT_AVIF: "avif",
}


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def image_to_proto(record: ImageRecord) -> image_pb2.Image:
    image = image_pb2.Image(
        image_id=record.id,
        status=STATUS_TO_PROTO[record.status],
        content_type=record.content_type,
        file_name=record.file_name,
        width=record.width or 0,
        height=record.height or 0,
        sha256=record.sha256 or "",
        failure_reason=record.failure_reason or "",
        detected_format=record.detected_format or "",
        create_time=_timestamp(record.created_at),
        update_time=_timestamp(record.updated_at),
        variants=[
            image_pb2.Variant(
                name=v.name,
                format=v.format,
                content_type=v.content_type,
                width=v.width,
                height=v.height,
                size_bytes=v.size_bytes,
            )
            for v in record.variants
        ]
        if record.status is ImageStatus.READY
        else [],
    )
    if record.size_bytes is not None:
        image.size_bytes = record.size_bytes
    return image


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
    return response


def get_download_url_response(url: DownloadUrl) -> pb.GetDownloadUrlResponse:
    return pb.GetDownloadUrlResponse(
        image_id=url.image_id,
        variant=url.variant,
        url=url.url,
        expire_time=_timestamp(url.expire_time),
        content_type=url.content_type,
    )
