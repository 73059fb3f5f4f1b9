"""Delivery use cases: only ports and domain types."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from imagery.common.domain import DownloadTarget, ImageRecord, ImageStatus
from imagery.common.errors import (
    ImageContentLost,
    ImageNotFound,
    ImageNotReady,
    InvalidImageId,
    NoImageIds,
    TooManyImageIds,
    UnknownVariant,
)
from imagery.common.ids import is_image_id, require_image_id
from imagery.common.tenancy import Principal, SettingsPolicy
from imagery.delivery.ports import ImageReader, UrlSigner
from imagery.delivery.variants import PREFERENCES, available, pick_variant

MAX_BATCH = 50


class DownloadUrl(NamedTuple):  # fifty per batch: cheaper to build than a frozen dataclass
    image_id: str
    variant: str
    url: str
    expire_time: datetime
    content_type: str


@dataclass(frozen=True, slots=True)
class BatchResult:
    download_urls: list[DownloadUrl]
    not_found_image_ids: list[str]


class GetImage:
    def __init__(self, images: ImageReader) -> None:
        self._images = images

    async def __call__(self, caller: Principal, *, image_id: str) -> ImageRecord:
        record = await self._images.find_by_id(caller.project_id, require_image_id(image_id))
        if record is None:  # never created, deleted, or another project's: one answer
            raise ImageNotFound(image_id)
        return record


class UrlLifetimes:
    """How long a project's signed URLs live: its setting, capped by the ceiling."""

    def __init__(self, policy: SettingsPolicy) -> None:
        self._policy = policy

    def __call__(self, caller: Principal) -> int:
        return self._policy.effective(caller.settings).signed_url_ttl_seconds


def _require_preset(variant: str, presets: Sequence[str]) -> str:
    if variant in presets:
        return variant
    raise UnknownVariant.not_configured(variant, ", ".join(presets))


class _SignsVariants:
    """What both URL use cases need: the project's images, the signer, the presets, and how
    long each project's URLs live."""

    def __init__(
        self,
        images: ImageReader,
        signer: UrlSigner,
        presets: Sequence[str],
        lifetimes: UrlLifetimes,
    ) -> None:
        self._images = images
        self._signer = signer
        self._presets = tuple(presets)
        self._lifetimes = lifetimes


class GetDownloadUrl(_SignsVariants):
    async def __call__(
        self, caller: Principal, *, image_id: str, variant: str, preference: str
    ) -> DownloadUrl:
        require_image_id(image_id)
        _require_preset(variant, self._presets)
        project = caller.project_id
        targets = await self._images.find_download_targets(
            project, [image_id], variant, PREFERENCES[preference]
        )
        target = targets[0] if targets else None
        ttl = self._lifetimes(caller)
        if target is not None and target.servable:
            assert target.key is not None
            signed = await self._signer.sign_many([target.key], ttl)
            return DownloadUrl(
                image_id, variant, signed.urls[0], signed.expire_time, target.content_type or ""
            )
        # Not servable as asked: the whole record says why (status, variants that exist).
        record = await self._images.find_by_id(project, image_id)
        if record is None:
            raise ImageNotFound(image_id)
        if record.status is not ImageStatus.READY:
            raise ImageNotReady(image_id, record.status.value)
        if not record.variants:  # the reconciler found its objects gone
            raise ImageContentLost(image_id)
        chosen = pick_variant(record, variant, preference)
        if chosen is None:
            raise UnknownVariant.not_made(image_id, variant, preference, available(record))
        signed = await self._signer.sign_many([chosen.key], ttl)
        return DownloadUrl(
            image_id, variant, signed.urls[0], signed.expire_time, chosen.content_type
        )


class BatchGetDownloadUrls(_SignsVariants):
    async def __call__(
        self, caller: Principal, *, image_ids: Sequence[str], variant: str, preference: str
    ) -> BatchResult:
        ids = _validate_batch(image_ids)
        _require_preset(variant, self._presets)
        targets = {
            t.image_id: t
            for t in await self._images.find_download_targets(
                caller.project_id, ids, variant, PREFERENCES[preference]
            )
        }
        found: list[DownloadTarget] = []
        missing: list[str] = []
        for image_id in ids:
            target = targets.get(image_id)
            if target is not None and target.servable:
                found.append(target)
            else:
                missing.append(image_id)
        signed = await self._signer.sign_many(
            [t.key for t in found if t.key], self._lifetimes(caller)
        )
        urls = [
            DownloadUrl(t.image_id, variant, url, signed.expire_time, t.content_type or "")
            for t, url in zip(found, signed.urls, strict=True)
        ]
        return BatchResult(urls, missing)


def _validate_batch(image_ids: Sequence[str]) -> list[str]:
    if not image_ids:
        raise NoImageIds(MAX_BATCH)
    ids = list(dict.fromkeys(image_ids))  # duplicates collapse; first appearance order kept
    if len(ids) > MAX_BATCH:
        raise TooManyImageIds(len(ids), MAX_BATCH)
    if all(map(is_image_id, ids)):  # the common case, without building a list
        return ids
    raise InvalidImageId(
        "image_ids", [i for i, value in enumerate(image_ids) if not is_image_id(value)]
    )
