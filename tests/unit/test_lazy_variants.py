"""Presets of a project's profile that an image has not rendered yet: the rendering is asked
for once per call, and the lazy policy answers the nearest rendered variant (marked as a
fallback) or VARIANT_PENDING with a retry delay."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest

from imagery.common.domain import ImageRecord, ImageStatus, VariantInfo
from imagery.common.errors import ImageryError
from imagery.common.ids import new_image_id
from imagery.common.presets import DEFAULT_PRESETS, Preset
from imagery.common.profiles import VariantProfile
from imagery.common.storage_keys import GLOBAL_SCOPE, upload_key, variant_key
from imagery.delivery.urls import BatchGetDownloadUrls, GetDownloadUrl, UrlLifetimes
from tests.fakes import InMemoryImageRepository
from tests.principals import caller, policy
from tests.unit.test_delivery_use_cases import RecordingSigner

LIFETIMES = UrlLifetimes(policy())
# 1600x1200 rendered at small (400x300) and large (1600x1200); "medium" is lazy, "card" new
PROFILE = VariantProfile(
    3,
    (
        Preset("small", 400, 400),
        Preset("medium", 800, 800, lazy=True),
        Preset("large", 1600, 1600),
        Preset("card", 300, 300, crop=True),
    ),
)
SIZES = {"small": (400, 300), "large": (1600, 1200)}


class RecordingRenders:
    def __init__(self) -> None:
        self.asked: list[tuple[str, tuple[str, ...], int, str]] = []

    async def request(
        self, project_id: str, image_ids: Sequence[str], version: int, preset: str
    ) -> None:
        self.asked.append((project_id, tuple(image_ids), version, preset))


async def _image(repo: InMemoryImageRepository, names: Sequence[str] = tuple(SIZES)) -> ImageRecord:
    image_id = new_image_id()
    sha = f"{len(repo.records) + 1:064x}"
    variants = tuple(
        VariantInfo(n, f, f"image/{f}", *SIZES[n], 100, variant_key(GLOBAL_SCOPE, sha, n, f, 3), 3)
        for n in names
        for f in ("webp", "jpeg")
    )
    record = ImageRecord(
        image_id, ImageStatus.READY, "image/jpeg", "a.jpg", upload_key(GLOBAL_SCOPE, image_id)
    )
    await repo.save(record)
    repo.records[image_id] = dataclasses.replace(
        repo.records[image_id], sha256=sha, variants=variants, width=1600, height=1200
    )
    return repo.records[image_id]


def _use_cases(
    repo: InMemoryImageRepository, renders: RecordingRenders
) -> tuple[GetDownloadUrl, BatchGetDownloadUrls, RecordingSigner]:
    signer = RecordingSigner()
    return (
        GetDownloadUrl(repo, signer, DEFAULT_PRESETS, LIFETIMES, renders),
        BatchGetDownloadUrls(repo, signer, DEFAULT_PRESETS, LIFETIMES, renders),
        signer,
    )


async def test_fallback_policy_serves_the_nearest_rendered_variant_and_asks_once() -> None:
    repo, renders = InMemoryImageRepository(), RecordingRenders()
    get, _, signer = _use_cases(repo, renders)
    image = await _image(repo)
    who = caller(profile=PROFILE)
    medium = await get(who, image_id=image.id, variant="medium", preference="webp")
    # 800x600 is as far from 400x300 as from 1600x1200: the larger serves
    assert medium.fallback and medium.variant == "medium" and medium.served == "large"
    assert signer.calls == [[variant_key(GLOBAL_SCOPE, image.sha256 or "", "large", "webp", 3)]]
    card = await get(who, image_id=image.id, variant="card", preference="fallback")
    assert (card.served, card.content_type) == ("small", "image/jpeg")  # 300x300 is near 400x300
    assert renders.asked == [
        (who.project_id, (image.id,), 3, "medium"),
        (who.project_id, (image.id,), 3, "card"),
    ]
    rendered = await get(who, image_id=image.id, variant="large", preference="webp")
    assert not rendered.fallback and rendered.served == ""
    assert len(renders.asked) == 2, "nothing asked for a variant that is there"


async def test_pending_policy_answers_variant_pending_with_a_retry_delay() -> None:
    repo, renders = InMemoryImageRepository(), RecordingRenders()
    get, batch, signer = _use_cases(repo, renders)
    image, other = await _image(repo), await _image(repo)
    who = caller(profile=dataclasses.replace(PROFILE, lazy_policy="pending"))
    with pytest.raises(ImageryError) as pending:
        await get(who, image_id=image.id, variant="medium", preference="webp")
    assert pending.value.reason == "VARIANT_PENDING"
    assert pending.value.retry_after is not None and pending.value.retry_after > 0
    assert pending.value.metadata == {"image_id": image.id, "variant": "medium"}
    result = await batch(
        who, image_ids=[image.id, other.id], variants=["small", "medium"], preference="webp"
    )
    assert [(u.image_id, u.variant, u.fallback) for u in result.download_urls] == [
        (image.id, "small", False),
        (other.id, "small", False),
    ]
    assert [(f.image_id, f.variant, f.reason) for f in result.failures] == [
        (image.id, "medium", "VARIANT_PENDING"),
        (other.id, "medium", "VARIANT_PENDING"),
    ]
    assert renders.asked[-1] == (who.project_id, (image.id, other.id), 3, "medium")
    assert signer.calls[-1] == [u.url.split("/", 3)[3].split("?")[0] for u in result.download_urls]


async def test_a_batch_falls_back_in_request_order() -> None:
    repo, renders = InMemoryImageRepository(), RecordingRenders()
    _, batch, _ = _use_cases(repo, renders)
    image = await _image(repo)
    result = await batch(
        caller(profile=PROFILE),
        image_ids=[image.id],
        variants=["medium", "small", "card"],
        preference="webp",
    )
    assert [(u.variant, u.fallback, u.served) for u in result.download_urls] == [
        ("medium", True, "large"),
        ("small", False, ""),
        ("card", True, "small"),
    ]
    assert result.failures == [] and result.not_found_image_ids == []
    assert [a[3] for a in renders.asked] == ["medium", "card"]


async def test_names_are_the_callers_profile_and_unrenderable_formats_stay_unknown() -> None:
    repo, renders = InMemoryImageRepository(), RecordingRenders()
    get, _, _ = _use_cases(repo, renders)
    image = await _image(repo)
    with pytest.raises(ImageryError) as unknown:
        await get(
            caller(profile=PROFILE), image_id=image.id, variant="thumbnail", preference="webp"
        )
    assert unknown.value.reason == "UNKNOWN_VARIANT"
    assert "small, medium, large, card" in unknown.value.message
    with pytest.raises(ImageryError) as avif:  # rendering "card" would make no AVIF
        await get(caller(profile=PROFILE), image_id=image.id, variant="card", preference="avif")
    assert avif.value.reason == "UNKNOWN_VARIANT"
    assert renders.asked == []
    default = await get(caller(), image_id=image.id, variant="small", preference="webp")
    assert not default.fallback, "a project without a profile has the deployment's presets"
