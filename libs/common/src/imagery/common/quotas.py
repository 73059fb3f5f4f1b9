"""What a project stores against its quotas: stored images, stored bytes, uploads per UTC day.

Postgres keeps the usage (migration 0012: triggers on every write of an image record) and
admits an upload by locking the project's usage row, so concurrent uploads are counted one
after another. This module only names the quotas and says which one an upload would exceed."""

from __future__ import annotations

from dataclasses import dataclass

from imagery.common.errors import QuotaExceeded
from imagery.common.tenancy import EffectiveSettings, Usage


@dataclass(frozen=True, slots=True)
class Quotas:
    """0 is unlimited."""

    images: int = 0
    bytes: int = 0
    uploads_per_day: int = 0

    @classmethod
    def of(cls, settings: EffectiveSettings) -> Quotas:
        return cls(settings.quota_images, settings.quota_bytes, settings.quota_uploads_per_day)

    @property
    def unlimited(self) -> bool:
        return not (self.images or self.bytes or self.uploads_per_day)


UNLIMITED = Quotas()


def refusal(
    usage: Usage, project_id: str, quotas: Quotas, reserve_bytes: int
) -> QuotaExceeded | None:
    """Why one more upload reserving `reserve_bytes` is refused, or None if it fits."""
    over = [
        (name, limit, used, what)
        for name, limit, used, fits, what in (
            (
                "quota_images",
                quotas.images,
                usage.images,
                usage.images < quotas.images,
                "images stored",
            ),
            (
                "quota_bytes",
                quotas.bytes,
                usage.bytes,
                usage.bytes + reserve_bytes <= quotas.bytes,
                "bytes stored",
            ),
            (
                "quota_uploads_per_day",
                quotas.uploads_per_day,
                usage.uploads_today,
                usage.uploads_today < quotas.uploads_per_day,
                "uploads today (UTC)",
            ),
        )
        if limit and not fits
    ]
    return QuotaExceeded(project_id, over, reserve_bytes) if over else None
