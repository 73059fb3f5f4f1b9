"""Delivery use cases: only ports and domain types."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from imagery.common.domain import DownloadTarget, ImageRecord, ImageStatus
from imagery.common.errors import (
    ImageContentLost,
    ImageFailed,
    ImageNotFound,
    ImageNotReady,
    ImageryError,
    InvalidArgument,
    InvalidImageId,
    NoImageIds,
    TooManyImageIds,
    UnknownVariant,
)
from imagery.common.ids import is_image_id, require_image_id
from imagery.common.listing import PagePosition
from imagery.common.tenancy import Principal, SettingsPolicy
from imagery.delivery.filtering import parse_filter
from imagery.delivery.ports import ImageLister, ImageReader, RecordFinder, UrlSigner
from imagery.delivery.variants import PREFERENCES, available, pick_variant

MAX_BATCH = 50
MAX_VARIANTS = 10
MAX_IMAGES = 100  # BatchGetImages
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


class DownloadUrl(NamedTuple):  # fifty per batch: cheaper to build than a frozen dataclass
    image_id: str
    variant: str
    url: str
    expire_time: datetime
    content_type: str


class UrlFailure(NamedTuple):
    """An image and variant a batch signed no URL for, and why (an ErrorReason name)."""

    image_id: str
    variant: str
    reason: str


@dataclass(frozen=True, slots=True)
class BatchResult:
    download_urls: list[DownloadUrl]
    not_found_image_ids: list[str]  # ids that got no URL at all
    failures: list[UrlFailure] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ImagesResult:
    images: list[ImageRecord]
    not_found_image_ids: list[str]


@dataclass(frozen=True, slots=True)
class ImagePage:
    images: list[ImageRecord]
    next_page_token: str


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
        self,
        caller: Principal,
        *,
        image_ids: Sequence[str],
        variant: str = "",
        preference: str,
        variants: Sequence[str] = (),
    ) -> BatchResult:
        ids = _validate_batch(image_ids, MAX_BATCH)
        names = _requested_variants(variant, variants, self._presets)
        project, formats = caller.project_id, PREFERENCES[preference]
        # per variant, each image's target (one indexed query, or the cache, per variant)
        found: list[dict[str, DownloadTarget]] = [
            {
                t.image_id: t
                for t in await self._images.find_download_targets(project, ids, name, formats)
            }
            for name in names
        ]
        servable = [
            (image_id, name, target)
            for image_id in ids
            for name, targets in zip(names, found, strict=True)
            if (target := targets.get(image_id)) is not None and target.servable
        ]
        signed = await self._signer.sign_many(
            [t.key for _, _, t in servable if t.key], self._lifetimes(caller)
        )
        expire = signed.expire_time
        urls = [
            DownloadUrl(image_id, name, url, expire, t.content_type or "")
            for (image_id, name, t), url in zip(servable, signed.urls, strict=True)
        ]
        if len(servable) == len(ids) * len(names):
            return BatchResult(urls, [])
        failures = await self._failures(project, ids, names, found)
        signed_ids = {u.image_id for u in urls}
        return BatchResult(urls, [i for i in ids if i not in signed_ids], failures)

    async def _failures(
        self,
        project: str,
        ids: Sequence[str],
        names: Sequence[str],
        found: Sequence[dict[str, DownloadTarget]],
    ) -> list[UrlFailure]:
        failures: list[UrlFailure] = []
        lost = await self._lost(project, ids, names, found)
        for image_id in ids:
            for name, targets in zip(names, found, strict=True):
                target = targets.get(image_id)
                if target is not None and target.servable:
                    continue
                if target is None:
                    reason = ImageNotFound.reason
                elif target.status is ImageStatus.FAILED:
                    reason = ImageFailed.reason
                elif target.status is not ImageStatus.READY:
                    reason = ImageNotReady.reason
                else:
                    reason = ImageContentLost.reason if image_id in lost else UnknownVariant.reason
                failures.append(UrlFailure(image_id, name, reason))
        return failures

    async def _lost(
        self,
        project: str,
        ids: Sequence[str],
        names: Sequence[str],
        found: Sequence[dict[str, DownloadTarget]],
    ) -> set[str]:
        """The READY images that have no variant at all (their content is lost), among those
        that serve none of `names`; one query for all of them."""
        serve_none = [
            image_id
            for image_id in ids
            if all(
                (t := targets.get(image_id)) is not None
                and t.status is ImageStatus.READY
                and not t.servable
                for targets in found
            )
        ]
        if not serve_none:
            return set()
        records = await self._images.find_many(project, serve_none)
        return {r.id for r in records if not r.variants}


class BatchGetImages:
    def __init__(self, images: RecordFinder) -> None:
        self._images = images

    async def __call__(self, caller: Principal, *, image_ids: Sequence[str]) -> ImagesResult:
        ids = _validate_batch(image_ids, MAX_IMAGES)
        by_id = {r.id: r for r in await self._images.find_many(caller.project_id, ids)}
        return ImagesResult(
            [by_id[i] for i in ids if i in by_id], [i for i in ids if i not in by_id]
        )


class ListImages:
    def __init__(self, images: ImageLister) -> None:
        self._images = images

    async def __call__(
        self, caller: Principal, *, page_size: int, page_token: str, filter: str
    ) -> ImagePage:
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise InvalidArgument(
                "page_size",
                f"is {page_size}",
                f"ask for 1 to {MAX_PAGE_SIZE} images (0 means {DEFAULT_PAGE_SIZE})",
            )
        size = page_size or DEFAULT_PAGE_SIZE
        match = parse_filter(filter)
        after = _read_token(page_token, filter) if page_token else None
        records = await self._images.list_page(caller.project_id, match, after, size + 1)
        if len(records) <= size:
            return ImagePage(records, "")
        last = records[size - 1]
        assert last.created_at is not None
        return ImagePage(
            records[:size], _write_token(PagePosition(last.created_at, last.id), filter)
        )


def _requested_variants(variant: str, variants: Sequence[str], presets: Sequence[str]) -> list[str]:
    """`variant` first, then `variants`, each once; each must be a configured preset."""
    names = list(dict.fromkeys([variant, *variants] if variant else variants))
    if len(names) > MAX_VARIANTS:
        raise InvalidArgument(
            "variants",
            f"names {len(names)} distinct presets",
            f"ask for at most {MAX_VARIANTS} per call",
        )
    for name in names or [variant]:
        _require_preset(name, presets)
    return names


# A page token is the last image of the page (the keyset) and a digest of the filter it was
# made for: opaque to callers, and refused with another filter. It reveals nothing the caller
# could not read: its own image's id and creation time.
def _filter_digest(filter: str) -> str:
    return hashlib.sha256(filter.encode()).hexdigest()[:16]


def _write_token(position: PagePosition, filter: str) -> str:
    raw = json.dumps(
        {"t": position.created_at.isoformat(), "i": position.image_id, "f": _filter_digest(filter)},
        separators=(",", ":"),
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _read_token(token: str, filter: str) -> PagePosition:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        position = PagePosition(datetime.fromisoformat(raw["t"]), require_image_id(raw["i"]))
        digest = raw["f"]
    except (ValueError, KeyError, TypeError, ImageryError):
        raise InvalidArgument(
            "page_token", "is not a token ListImages made", "send next_page_token as received"
        ) from None
    if digest != _filter_digest(filter):
        raise InvalidArgument(
            "page_token",
            "was made for another filter",
            "send the same filter as the call that returned it, or start without a token",
        )
    return position


def _validate_batch(image_ids: Sequence[str], most: int) -> list[str]:
    if not image_ids:
        raise NoImageIds(most)
    ids = list(dict.fromkeys(image_ids))  # duplicates collapse; first appearance order kept
    if len(ids) > most:
        raise TooManyImageIds(len(ids), most)
    if all(map(is_image_id, ids)):  # the common case, without building a list
        return ids
    raise InvalidImageId(
        "image_ids", [i for i, value in enumerate(image_ids) if not is_image_id(value)]
    )
