"""Limits one upload asked for at CreateUploadUrl, stricter than its project's (issue 19):
validated by UploadService, stored with the pending record, enforced by the processor."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class UploadLimits:
    """None: the project's (or the deployment's) value applies."""

    max_width: int | None = None
    max_height: int | None = None
    max_pixels: int | None = None
    max_frames: int | None = None
    allow_animation: bool | None = None

    @property
    def empty(self) -> bool:
        return self == NO_UPLOAD_LIMITS

    @property
    def frames(self) -> int | None:
        """The most frames accepted: 1 when animation is not allowed."""
        return 1 if self.allow_animation is False else self.max_frames

    def to_json(self) -> dict[str, Any]:
        return {name: value for name, value in asdict(self).items() if value is not None}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | None) -> UploadLimits | None:
        if not raw:
            return None
        return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})


NO_UPLOAD_LIMITS = UploadLimits()
