"""proto <-> domain for UploadService."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from imagery.upload.use_cases import UploadTicket
from imagery.v1 import upload_service_pb2 as pb


def ticket_to_proto(ticket: UploadTicket) -> pb.CreateUploadUrlResponse:
    expire_time = Timestamp()
    expire_time.FromDatetime(ticket.expire_time)
    return pb.CreateUploadUrlResponse(
        image_id=ticket.image_id,
        upload_url=ticket.upload_url,
        expire_time=expire_time,
        required_headers=ticket.required_headers,
        upload_method=ticket.method,
        max_size_bytes=ticket.max_size_bytes,
    )
