"""proto <-> domain for DeliveryService (an Image maps in imagery.common.grpc.images, shared
with UploadService's UpdateImage)."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from imagery.common.grpc.images import timestamp
from imagery.delivery.use_cases import BatchResult, DownloadUrl
from imagery.v1 import delivery_service_pb2 as pb
from imagery.v1 import image_pb2

PREFERENCE_FROM_PROTO = {
    image_pb2.VARIANT_FORMAT_UNSPECIFIED: "webp",
    image_pb2.VARIANT_FORMAT_WEBP: "webp",
    image_pb2.VARIANT_FORMAT_FALLBACK: "fallback",
    image_pb2.VARIANT_FORMAT_AVIF: "avif",
}


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
        expire_time=timestamp(url.expire_time),
        content_type=url.content_type,
    )
