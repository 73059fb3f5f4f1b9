"""CreateUploadUrl's request ids (AIP-155): what one the project used stands for, and how long
it does. Written with the image by UploadService, pruned by the processor."""

from __future__ import annotations

from dataclasses import dataclass

# How long a request id answers for the image its first call created; past this it means
# nothing (lookups ignore it, a new call with it starts afresh) and the processor prunes it.
REQUEST_ID_RETENTION_SECONDS = 86_400


@dataclass(frozen=True, slots=True)
class UsedRequestId:
    """A request id the project used within the retention: a fingerprint of the other fields
    of the call that used it, the image that call created, and that image's upload key (None
    once the image has been deleted)."""

    fingerprint: str
    image_id: str
    object_key: str | None
