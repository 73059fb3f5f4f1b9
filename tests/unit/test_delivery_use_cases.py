from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from imagery.common.domain import ImageRecord, ImageStatus, VariantInfo
from imagery.common.errors import ImageNotFound, ImageryError
from imagery.common.ids import new_image_id
from imagery.common.presets import DEFAULT_PRESETS, PRESET_NAMES, Preset
from imagery.common.storage_keys import GLOBAL_SCOPE, upload_key, variant_key
from imagery.delivery.ports import SignedUrls
from imagery.delivery.urls import BatchGetDownloadUrls, GetDownloadUrl, UrlLifetimes
from imagery.delivery.use_cases import GetImage
from tests.fakes import InMemoryImageRepository
from tests.principals import CALLER, OTHER, caller, policy

LIFETIMES = UrlLifetimes(policy())

EXPIRES = datetime(2026, 1, 1, 0, 10, tzinfo=UTC)


class RecordingSigner:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.lifetimes: list[int | None] = []

    async def sign_many(
        self, object_keys: Sequence[str], expiry_seconds: int | None = None
    ) -> SignedUrls:
        self.calls.append(list(object_keys))
        self.lifetimes.append(expiry_seconds)
        return SignedUrls([f"https://cdn/{k}?Signature=s" for k in object_keys], EXPIRES)


def _variants(sha: str, formats: Sequence[str] = ("webp", "jpeg")) -> tuple[VariantInfo, ...]:
    return tuple(
        VariantInfo(
            name, fmt, f"image/{fmt}", 10, 10, 100, variant_key(GLOBAL_SCOPE, sha, name, fmt)
        )
        for name in PRESET_NAMES
        for fmt in formats
    )


async def _image(
    repo: InMemoryImageRepository,
    status: ImageStatus = ImageStatus.READY,
    formats: Sequence[str] = ("webp", "jpeg"),
) -> ImageRecord:
    image_id = new_image_id()
    sha = f"{len(repo.records):064x}"
    record = ImageRecord(
        image_id,
        status,
        "image/jpeg",
        "a.jpg",
        upload_key(GLOBAL_SCOPE, image_id),
        sha256=sha if status is ImageStatus.READY else None,
        variants=_variants(sha, formats) if status is ImageStatus.READY else (),
    )
    await repo.save(record)
    repo.records[image_id] = dataclasses.replace(
        repo.records[image_id], variants=record.variants, sha256=record.sha256
    )
    return repo.records[image_id]


@pytest.fixture
def repo() -> InMemoryImageRepository:
    return InMemoryImageRepository()


@pytest.fixture
def signer() -> RecordingSigner:
    return RecordingSigner()


async def test_get_image_returns_the_record(repo: InMemoryImageRepository) -> None:
    record = await _image(repo)
    assert (await GetImage(repo)(CALLER, image_id=record.id)).id == record.id


@pytest.mark.parametrize(
    ("image_id", "error"), [("nope", ImageryError), (new_image_id(), ImageNotFound)]
)
async def test_get_image_errors(
    repo: InMemoryImageRepository, image_id: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await GetImage(repo)(CALLER, image_id=image_id)


async def test_download_url_signs_the_requested_variant_only(
    repo: InMemoryImageRepository, signer: RecordingSigner
) -> None:
    record = await _image(repo)
    url = await GetDownloadUrl(repo, signer, DEFAULT_PRESETS, LIFETIMES)(
        CALLER, image_id=record.id, variant="small", preference="webp"
    )
    assert signer.calls == [[f"variants/{record.sha256}/small.webp"]]
    assert (url.image_id, url.variant, url.content_type, url.expire_time) == (
        record.id,
        "small",
        "image/webp",
        EXPIRES,
    )
    fallback = await GetDownloadUrl(repo, signer, DEFAULT_PRESETS, LIFETIMES)(
        CALLER, image_id=record.id, variant="thumbnail", preference="fallback"
    )
    assert fallback.url.endswith("/thumbnail.jpg?Signature=s")


@pytest.mark.parametrize(
    "status", [ImageStatus.PENDING, ImageStatus.PROCESSING, ImageStatus.FAILED]
)
async def test_download_url_of_an_image_that_is_not_ready(
    repo: InMemoryImageRepository, signer: RecordingSigner, status: ImageStatus
) -> None:
    record = await _image(repo, status)
    with pytest.raises(ImageryError) as caught:
        await GetDownloadUrl(repo, signer, DEFAULT_PRESETS, LIFETIMES)(
            CALLER, image_id=record.id, variant="small", preference="webp"
        )
    assert caught.value.reason == "IMAGE_NOT_READY"
    assert caught.value.metadata["status"] == status.value
    assert signer.calls == []


async def test_unknown_variant_lists_the_ones_that_exist(
    repo: InMemoryImageRepository, signer: RecordingSigner
) -> None:
    record = await _image(repo)
    use_case = GetDownloadUrl(repo, signer, DEFAULT_PRESETS, LIFETIMES)
    with pytest.raises(ImageryError) as caught:
        await use_case(CALLER, image_id=record.id, variant="huge", preference="webp")
    assert caught.value.reason == "UNKNOWN_VARIANT"
    assert "thumbnail, small, medium, large, original" in caught.value.message
    with pytest.raises(ImageryError) as missing_format:
        await use_case(CALLER, image_id=record.id, variant="small", preference="avif")
    assert "thumbnail, small" in missing_format.value.message
    assert signer.calls == []


async def test_a_ready_image_whose_bytes_were_lost_says_so(
    repo: InMemoryImageRepository, signer: RecordingSigner
) -> None:
    record = await _image(repo)
    repo.records[record.id] = dataclasses.replace(record, variants=())  # marked lost
    with pytest.raises(ImageryError) as caught:
        await GetDownloadUrl(repo, signer, DEFAULT_PRESETS, LIFETIMES)(
            CALLER, image_id=record.id, variant="small", preference="webp"
        )
    assert caught.value.reason == "IMAGE_CONTENT_LOST"
    assert "upload the same file again" in caught.value.message
    assert signer.calls == []


async def test_originals_and_uploads_are_never_signed(
    repo: InMemoryImageRepository, signer: RecordingSigner
) -> None:
    record = await _image(repo)
    use_case = BatchGetDownloadUrls(repo, signer, DEFAULT_PRESETS, LIFETIMES)
    for name in PRESET_NAMES:
        await use_case(CALLER, image_ids=[record.id], variant=name, preference="webp")
        await use_case(CALLER, image_ids=[record.id], variant=name, preference="fallback")
    signed = [key for call in signer.calls for key in call]
    assert signed and all(key.startswith(f"variants/{record.sha256}/") for key in signed)


async def test_batch_keeps_first_appearance_order_and_collapses_duplicates(
    repo: InMemoryImageRepository, signer: RecordingSigner
) -> None:
    a, b, c = [await _image(repo) for _ in range(3)]
    pending = await _image(repo, ImageStatus.PENDING)
    unknown = new_image_id()
    repo.queries = 0
    result = await BatchGetDownloadUrls(repo, signer, DEFAULT_PRESETS, LIFETIMES)(
        CALLER,
        image_ids=[c.id, a.id, unknown, c.id, pending.id, b.id, a.id],
        variant="small",
        preference="webp",
    )
    assert [u.image_id for u in result.download_urls] == [c.id, a.id, b.id]
    assert result.not_found_image_ids == [unknown, pending.id]
    assert repo.queries == 1, "one database round trip"
    assert len(signer.calls) == 1


async def test_batch_limits(repo: InMemoryImageRepository, signer: RecordingSigner) -> None:
    use_case = BatchGetDownloadUrls(repo, signer, DEFAULT_PRESETS, LIFETIMES)
    with pytest.raises(ImageryError) as empty:
        await use_case(CALLER, image_ids=[], variant="small", preference="webp")
    assert empty.value.reason == "NO_IMAGE_IDS"
    with pytest.raises(ImageryError) as many:
        await use_case(
            CALLER,
            image_ids=[new_image_id() for _ in range(51)],
            variant="small",
            preference="webp",
        )
    assert many.value.reason == "TOO_MANY_IMAGE_IDS"
    ids = [new_image_id() for _ in range(50)]
    result = await use_case(CALLER, image_ids=ids + ids[:10], variant="small", preference="webp")
    assert result.not_found_image_ids == ids, "60 ids with duplicates are 50 distinct: accepted"
    with pytest.raises(ImageryError) as bad:
        await use_case(CALLER, image_ids=[ids[0], "not-an-id"], variant="small", preference="webp")
    assert bad.value.reason == "INVALID_IMAGE_ID"
    assert bad.value.violations[0].field == "image_ids[1]"
    with pytest.raises(ImageryError) as variant:
        await use_case(CALLER, image_ids=ids[:1], variant="original.png", preference="webp")
    assert variant.value.reason == "UNKNOWN_VARIANT"
    assert repo.queries == 1, "invalid batches never reach the database"


async def test_another_projects_image_is_answered_like_an_unknown_one(
    repo: InMemoryImageRepository,
) -> None:
    record = await _image(repo)
    signer = RecordingSigner()
    with pytest.raises(ImageNotFound) as theirs:
        await GetImage(repo)(OTHER, image_id=record.id)
    unknown = new_image_id()
    with pytest.raises(ImageNotFound) as nobodys:
        await GetImage(repo)(OTHER, image_id=unknown)
    assert theirs.value.message == nobodys.value.message.replace(unknown, record.id)
    with pytest.raises(ImageNotFound):
        await GetDownloadUrl(repo, signer, DEFAULT_PRESETS, LIFETIMES)(
            OTHER, image_id=record.id, variant="small", preference="webp"
        )
    batch = await BatchGetDownloadUrls(repo, signer, DEFAULT_PRESETS, LIFETIMES)(
        OTHER, image_ids=[record.id], variant="small", preference="webp"
    )
    assert batch.download_urls == [] and batch.not_found_image_ids == [record.id]
    assert [k for call in signer.calls for k in call] == [], "nothing of theirs is signed"


async def test_urls_live_as_long_as_the_project_chose(repo: InMemoryImageRepository) -> None:
    from imagery.common.tenancy import ProjectSettings

    record = await _image(repo)
    signer = RecordingSigner()
    week = caller(settings=ProjectSettings(signed_url_ttl_seconds=7 * 86400))
    use_case = BatchGetDownloadUrls(repo, signer, DEFAULT_PRESETS, LIFETIMES)
    await use_case(week, image_ids=[record.id], variant="small", preference="webp")
    await use_case(CALLER, image_ids=[record.id], variant="small", preference="webp")
    assert signer.lifetimes == [7 * 86400, 600]


async def test_a_batch_of_several_variants_answers_each_image_in_request_order(
    repo: InMemoryImageRepository, signer: RecordingSigner
) -> None:
    a, b = await _image(repo), await _image(repo)
    result = await BatchGetDownloadUrls(repo, signer, DEFAULT_PRESETS, LIFETIMES)(
        CALLER,
        image_ids=[b.id, a.id],
        variant="small",
        variants=["thumbnail", "small", "medium"],
        preference="webp",
    )
    assert [(u.image_id, u.variant) for u in result.download_urls] == [
        (b.id, "small"),
        (b.id, "thumbnail"),
        (b.id, "medium"),
        (a.id, "small"),
        (a.id, "thumbnail"),
        (a.id, "medium"),
    ]
    assert all(u.url.endswith(f"/{u.variant}.webp?Signature=s") for u in result.download_urls)
    assert result.failures == [] and result.not_found_image_ids == []
    assert len(signer.calls) == 1, "every URL of the batch signed in one call"


async def test_each_url_a_batch_cannot_sign_is_listed_with_its_reason(
    repo: InMemoryImageRepository, signer: RecordingSigner
) -> None:
    ready = await _image(repo, formats=("jpeg",))  # no WebP variants: they are rendered
    webp = await _image(repo)
    pending = await _image(repo, ImageStatus.PENDING)
    failed = await _image(repo, ImageStatus.FAILED)
    lost = await _image(repo)
    repo.records[lost.id] = dataclasses.replace(lost, variants=())
    unknown = new_image_id()
    ids = [unknown, ready.id, pending.id, failed.id, lost.id, webp.id]
    repo.queries = 0
    result = await BatchGetDownloadUrls(repo, signer, DEFAULT_PRESETS, LIFETIMES)(
        CALLER, image_ids=ids, variants=["thumbnail", "small"], preference="webp"
    )
    assert [(u.image_id, u.variant) for u in result.download_urls] == [
        (webp.id, "thumbnail"),
        (webp.id, "small"),
    ]
    reasons = {
        unknown: "IMAGE_NOT_FOUND",
        ready.id: "VARIANT_PENDING",  # no WebP variant to fall back on meanwhile
        pending.id: "IMAGE_NOT_READY",
        failed.id: "IMAGE_FAILED",
        lost.id: "IMAGE_CONTENT_LOST",
    }
    assert [(f.image_id, f.variant, f.reason) for f in result.failures] == [
        (image_id, variant, reasons[image_id])
        for image_id in ids[:-1]
        for variant in ("thumbnail", "small")
    ]
    assert result.not_found_image_ids == ids[:-1], "kept for older clients: ids with no URL"
    assert repo.queries == 3, "one query per variant, one for the images that serve neither"


async def test_a_batch_refuses_unconfigured_or_too_many_variants(
    repo: InMemoryImageRepository, signer: RecordingSigner
) -> None:
    record = await _image(repo)
    use_case = BatchGetDownloadUrls(repo, signer, DEFAULT_PRESETS, LIFETIMES)
    with pytest.raises(ImageryError) as unknown:
        await use_case(CALLER, image_ids=[record.id], variants=["small", "huge"], preference="webp")
    assert unknown.value.reason == "UNKNOWN_VARIANT"
    with pytest.raises(ImageryError) as neither:
        await use_case(CALLER, image_ids=[record.id], preference="webp")
    assert neither.value.reason == "UNKNOWN_VARIANT"
    presets = [Preset(f"p{i}", 10, 10) for i in range(11)]
    with pytest.raises(ImageryError) as many:
        await BatchGetDownloadUrls(repo, signer, presets, LIFETIMES)(
            CALLER, image_ids=[record.id], variants=[p.name for p in presets], preference="webp"
        )
    assert many.value.reason == "INVALID_ARGUMENT"
    assert many.value.violations[0].field == "variants"
    assert signer.calls == []
