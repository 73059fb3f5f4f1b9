"""Domain errors: a reason (UPPER_SNAKE), one actionable sentence, metadata. No gRPC types.

The gRPC edge (`imagery.common.grpc.errors`) maps these classes to status codes in one table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


class ImageryError(Exception):
    """Base of every error a caller may see. `message` is shown to the caller verbatim."""

    reason = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgument(ImageryError):
    """The request itself is wrong; retrying it unchanged cannot succeed."""

    reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        violations: Sequence[FieldViolation] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations = tuple(violations)


class NotFound(ImageryError):
    reason = "NOT_FOUND"


class FailedPrecondition(ImageryError):
    reason = "FAILED_PRECONDITION"


class Unavailable(ImageryError):
    """A dependency (database, object store, queue) cannot be reached; safe to retry."""

    reason = "DEPENDENCY_UNAVAILABLE"


class Unimplemented(ImageryError):
    reason = "NOT_IMPLEMENTED"


class ImageNotFound(NotFound):
    reason = "IMAGE_NOT_FOUND"

    def __init__(self, image_id: str) -> None:
        super().__init__(
            f"No image has id {image_id}: check the id returned by CreateUploadUrl.",
            metadata={"image_id": image_id},
        )
