"""proto <-> domain for the Image resource, which both UploadService (UpdateImage) and
DeliveryService answer with."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from imagery.common.domain import ImageRecord, ImageStatus
from imagery.v1 import image_pb2

STATUS_TO_PROTO = {
    ImageStatus.PENDING: image_pb2.IMAGE_STATUS_PENDING,
    ImageStatus.PROCESSING: image_pb2.IMAGE_STATUS_PROCESSING,
    ImageStatus.READY: image_pb2.IMAGE_STATUS_READY,
    ImageStatus.FAILED: image_pb2.IMAGE_STATUS_FAILED,
    ImageStatus.BLOCKED: image_pb2.IMAGE_STATUS_BLOCKED,
}


def timestamp(value: datetime | None) -> Timestamp | None:
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
        create_time=timestamp(record.created_at),
        update_time=timestamp(record.updated_at),
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
        labels=record.labels,
        profile_version=record.profile_version,
    )
    if record.size_bytes is not None:
        image.size_bytes = record.size_bytes
    if record.insights is not None and record.status is ImageStatus.READY:
        found = record.insights
        image.placeholder.thumbhash = found.thumbhash
        image.placeholder.blurhash = found.blurhash
        image.average_color = found.average_color
        image.dominant_colors.extend(
            image_pb2.DominantColor(color=color, fraction=share)
            for color, share in found.dominant_colors
        )
    return image
