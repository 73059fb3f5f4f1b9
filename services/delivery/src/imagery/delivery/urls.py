"""The URL use cases, GetDownloadUrl and BatchGetDownloadUrls: only ports and domain types.

A variant is a preset of the caller's project's profile. One that is not rendered for a READY
image yet (a lazy preset, or one a backfill has not reached) is asked of the processor at
once, and the profile's lazy policy says what the caller gets meanwhile: the nearest rendered
variant, marked as a fallback, or VARIANT_PENDING with a retry delay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from imagery.common.domain import DownloadTarget, ImageRecord, ImageStatus
from imagery.common.errors import (
    ImageBlocked,
    ImageContentLost,
    ImageFailed,
    ImageNotFound,
    ImageNotReady,
    InvalidArgument,
    UnknownVariant,
    VariantPending,
)
from imagery.common.ids import require_image_id
from imagery.common.presets import Preset
from imagery.common.profiles import VariantProfile, default_profile
from imagery.common.tenancy import Principal, SettingsPolicy
from imagery.delivery.ports import ImageReader, RenderRequests, UrlSigner
from imagery.delivery.use_cases import validate_batch
from imagery.delivery.variants import PREFERENCES, available, nearest_variant, pick_variant

MAX_BATCH = 50
MAX_VARIANTS = 10


class DownloadUrl(NamedTuple):  # fifty per batch: cheaper to build than a frozen dataclass
    image_id: str
    variant: str
    url: str
    expire_time: datetime
    content_type: str
    fallback: bool = False  # `variant` is not rendered yet: the URL serves `served`
    served: str = ""  # the preset the URL serves, when it is not `variant`


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


class UrlLifetimes:
    """How long a project's signed URLs live: its setting, capped by the ceiling."""

    def __init__(self, policy: SettingsPolicy) -> None:
        self._policy = policy

    def __call__(self, caller: Principal) -> int:
        return self._policy.effective(caller.settings).signed_url_ttl_seconds


class _SignsVariants:
    """What both URL use cases need: the project's images, the signer, the deployment's
    presets (the profile of projects that chose none), how long each project's URLs live, and
    where renderings are asked for."""

    def __init__(
        self,
        images: ImageReader,
        signer: UrlSigner,
        presets: Sequence[Preset],
        lifetimes: UrlLifetimes,
        renders: RenderRequests | None = None,
    ) -> None:
        self._images = images
        self._signer = signer
        self._default = default_profile(presets)
        self._lifetimes = lifetimes
        self._renders = renders

    def _profile(self, caller: Principal) -> VariantProfile:
        return caller.profile or self._default

    async def _ask(
        self, caller: Principal, profile: VariantProfile, name: str, image_ids: Sequence[str]
    ) -> None:
        if self._renders is not None and image_ids:
            await self._renders.request(caller.project_id, image_ids, profile.version, name)

    async def _fallback(
        self, record: ImageRecord, preset: Preset, preference: str, ttl: int
    ) -> DownloadUrl | None:
        nearest = nearest_variant(record, preset, preference)
        if nearest is None:
            return None
        signed = await self._signer.sign_many([nearest.key], ttl)
        return DownloadUrl(
            record.id,
            preset.name,
            signed.urls[0],
            signed.expire_time,
            nearest.content_type,
            fallback=True,
            served=nearest.name,
        )


def require_preset(name: str, profile: VariantProfile) -> Preset:
    preset = profile.preset(name)
    if preset is None:
        raise UnknownVariant.not_configured(name, ", ".join(profile.names))
    return preset


def renderable(preset: Preset, preference: str) -> bool:
    """Rendering the preset makes a variant in a format the preference accepts ("jpeg" is
    JPEG, or PNG for an image with alpha)."""
    made = {*preset.formats, "png"} if "jpeg" in preset.formats else set(preset.formats)
    return any(fmt in made for fmt in PREFERENCES[preference])


class GetDownloadUrl(_SignsVariants):
    async def __call__(
        self, caller: Principal, *, image_id: str, variant: str, preference: str
    ) -> DownloadUrl:
        require_image_id(image_id)
        profile = self._profile(caller)
        preset = require_preset(variant, profile)
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
        if record.status is ImageStatus.BLOCKED:
            raise ImageBlocked(image_id)
        if record.status is not ImageStatus.READY:
            raise ImageNotReady(image_id, record.status.value)
        if not record.variants:  # the reconciler found its objects gone
            raise ImageContentLost(image_id)
        chosen = pick_variant(record, variant, preference)
        if chosen is not None:  # made between the two reads
            signed = await self._signer.sign_many([chosen.key], ttl)
            return DownloadUrl(
                image_id, variant, signed.urls[0], signed.expire_time, chosen.content_type
            )
        if not renderable(preset, preference):
            raise UnknownVariant.not_made(image_id, variant, preference, available(record))
        await self._ask(caller, profile, variant, [image_id])
        fallback = None
        if profile.lazy_policy == "fallback":
            fallback = await self._fallback(record, preset, preference, ttl)
        if fallback is None:
            raise VariantPending(image_id, variant)
        return fallback


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
        ids = validate_batch(image_ids, MAX_BATCH)
        profile = self._profile(caller)
        names = _requested_variants(variant, variants, profile)
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
        ttl = self._lifetimes(caller)
        signed = await self._signer.sign_many([t.key for _, _, t in servable if t.key], ttl)
        expire = signed.expire_time
        urls = [
            DownloadUrl(image_id, name, url, expire, t.content_type or "")
            for (image_id, name, t), url in zip(servable, signed.urls, strict=True)
        ]
        if len(servable) == len(ids) * len(names):
            return BatchResult(urls, [])
        fallbacks, failures = await self._unserved(caller, profile, ids, names, found, preference)
        if fallbacks:
            order = {(i, n): k for k, (i, n) in enumerate((i, n) for i in ids for n in names)}
            urls = sorted([*urls, *fallbacks], key=lambda u: order[(u.image_id, u.variant)])
        signed_ids = {u.image_id for u in urls}
        return BatchResult(urls, [i for i in ids if i not in signed_ids], failures)

    async def _unserved(
        self,
        caller: Principal,
        profile: VariantProfile,
        ids: Sequence[str],
        names: Sequence[str],
        found: Sequence[dict[str, DownloadTarget]],
        preference: str,
    ) -> tuple[list[DownloadUrl], list[UrlFailure]]:
        """For each image and variant without a URL: a fallback URL, or the reason."""
        ready = [  # READY images lacking a requested variant: their records say why
            image_id
            for image_id in ids
            if any(
                (t := targets.get(image_id)) is not None
                and t.status is ImageStatus.READY
                and not t.servable
                for targets in found
            )
        ]
        records = (
            {r.id: r for r in await self._images.find_many(caller.project_id, ready)}
            if ready
            else {}
        )
        fallbacks: list[DownloadUrl] = []
        failures: list[UrlFailure] = []
        ttl = self._lifetimes(caller)
        for name, targets in zip(names, found, strict=True):
            preset = require_preset(name, profile)
            asked: list[str] = []
            for image_id in ids:
                target = targets.get(image_id)
                if target is not None and target.servable:
                    continue
                record = records.get(image_id)
                reason = _unservable(target, record, preset, preference)
                if reason is None and record is not None:
                    asked.append(image_id)
                    fallback = None
                    if profile.lazy_policy == "fallback":
                        fallback = await self._fallback(record, preset, preference, ttl)
                    if fallback is not None:
                        fallbacks.append(fallback)
                        continue
                    reason = VariantPending.reason
                failures.append(UrlFailure(image_id, name, reason or ImageNotFound.reason))
            await self._ask(caller, profile, name, asked)
        order = {image_id: k for k, image_id in enumerate(ids)}
        failures.sort(key=lambda f: order[f.image_id])
        return fallbacks, failures


def _unservable(
    target: DownloadTarget | None, record: ImageRecord | None, preset: Preset, preference: str
) -> str | None:
    """Why an image cannot serve the preset at all (an ErrorReason name); None when rendering
    it would make it servable."""
    if target is None:
        return ImageNotFound.reason
    if target.status is ImageStatus.FAILED:
        return ImageFailed.reason
    if target.status is ImageStatus.BLOCKED:
        return ImageBlocked.reason
    if target.status is not ImageStatus.READY or record is None:
        return ImageNotReady.reason
    if not record.variants:
        return ImageContentLost.reason
    if not renderable(preset, preference):
        return UnknownVariant.reason
    return None


def _requested_variants(
    variant: str, variants: Sequence[str], profile: VariantProfile
) -> list[str]:
    """`variant` first, then `variants`, each once; each must be a preset of the profile."""
    names = list(dict.fromkeys([variant, *variants] if variant else variants))
    if len(names) > MAX_VARIANTS:
        raise InvalidArgument(
            "variants",
            f"names {len(names)} distinct presets",
            f"ask for at most {MAX_VARIANTS} per call",
        )
    for name in names or [variant]:
        require_preset(name, profile)
    return names
