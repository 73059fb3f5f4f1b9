"""The image record and its status, shared by every service."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from imagery.common.profiles import VariantProfile
from imagery.common.tenancy import ProjectSettings
from imagery.common.upload_limits import UploadLimits


class ImageStatus(enum.Enum):
    PENDING = "pending"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"
    BLOCKED = "blocked"  # taken down by an operator (`imagery-admin block`)

    @property
    def terminal(self) -> bool:
        return self in (ImageStatus.READY, ImageStatus.FAILED, ImageStatus.BLOCKED)


@dataclass(frozen=True, slots=True)
class VariantInfo:
    name: str
    format: str
    content_type: str
    width: int
    height: int
    size_bytes: int
    key: str
    profile_version: int = 0  # the variant profile version it was rendered for
    over_budget: bool = False  # over its preset's max_bytes even at the quality floor


class DownloadTarget(NamedTuple):
    """What delivery needs to sign one variant of one image: its status and, when the image
    is ready and has the variant, the variant's object key and content type. A NamedTuple:
    a batch builds fifty per call, and a NamedTuple is the cheapest record to create."""

    image_id: str
    status: ImageStatus
    key: str | None
    content_type: str | None
    format: str | None = None

    @property
    def servable(self) -> bool:
        """A URL may be signed for it: the image is READY and has the variant asked for."""
        return self.status is ImageStatus.READY and self.key is not None


@dataclass(frozen=True, slots=True)
class ImageInsights:
    """What the processor computed from the content at ingest: placeholders and colours."""

    thumbhash: bytes
    blurhash: str
    average_color: str  # "#rrggbb"
    dominant_colors: tuple[tuple[str, float], ...] = ()  # ("#rrggbb", share), largest first


@dataclass(frozen=True, slots=True)
class ImageRecord:
    id: str
    status: ImageStatus
    content_type: str
    file_name: str
    object_key: str
    size_bytes: int | None = None
    width: int | None = None
    height: int | None = None
    sha256: str | None = None  # the bytes' SHA-256 (its content address is `content`)
    detected_format: str | None = None
    failure_reason: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    variants: tuple[VariantInfo, ...] = field(default=())
    trace_context: str | None = None  # W3C traceparent of the call that created the record
    attempts: int = 0  # jobs started for it (a job lost with its processor does not count)
    project_id: str = "default"
    content: str | None = None  # the content address: where the objects live
    # The scope of the project's content addresses (`tenancy.content_address`); read only by
    # the processor, with the record it claims.
    content_scope: str = ""
    project_settings: ProjectSettings | None = None  # likewise: what the project chose
    project_profile: VariantProfile | None = None  # and its variant profile (None: default)
    # Bytes the project's quota counts while the upload has not ended (declared or maximum).
    reserved_bytes: int = 0
    # The caller's labels (validated by UploadService before they are stored).
    labels: dict[str, str] = field(default_factory=dict)
    # The variant profile version its content is rendered with (0: the default profile).
    profile_version: int = 0
    # Placeholders and colours of its content (None: not READY, or stored before they existed).
    insights: ImageInsights | None = None
    # Limits the upload asked for, stricter than the project's (None: the project's only).
    upload_limits: UploadLimits | None = None


@dataclass(frozen=True, slots=True)
class DeletedImage:
    """What a deletion removed: enough to clean up after the commit."""

    id: str
    status: ImageStatus
    object_key: str
    sha256: str | None
