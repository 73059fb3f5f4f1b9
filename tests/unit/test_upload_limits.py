"""An upload's own limits (issue 19, part 6): what CreateUploadUrl accepts and stores, what
a request id's fingerprint makes of them, and how the processor narrows its checks."""

from __future__ import annotations

import pytest

from imagery.common.errors import FailureReason, ImageryError
from imagery.common.tenancy import ProjectSettings
from imagery.common.upload_limits import UploadLimits
from imagery.processor.adapters.verify import verify
from imagery.processor.imaging import Limits, Rejected
from imagery.processor.use_cases.process_upload import _job_limits, _outside_project_limits
from imagery.upload.use_cases import CreateUploadUrl, UploadRequest
from imagery.upload.validation import validate_upload_limits
from tests import images
from tests.fakes import FakeClock, FakeSigner, FakeUploadRequests, InMemoryImageRepository
from tests.principals import CALLER, caller, policy

SETTINGS = policy(max_image_side=5000).effective(ProjectSettings(max_width=4000, min_height=10))


def _validate(limits: UploadLimits | None) -> UploadLimits | None:
    return validate_upload_limits(limits, SETTINGS, max_pixels=1_000_000, max_frames=50)


@pytest.mark.parametrize(
    ("limits", "field", "description"),
    [
        (UploadLimits(max_width=4001), "limits.max_width", "the project's max_width of 4000"),
        (UploadLimits(max_height=5001), "limits.max_height", "the project's max_height of 5000"),
        (UploadLimits(max_pixels=1_000_001), "limits.max_pixels", "max_pixels of 1000000"),
        (UploadLimits(max_frames=51), "limits.max_frames", "the project's max_frames of 50"),
        (UploadLimits(max_width=-1), "limits.max_width", "is -1"),
        (UploadLimits(max_height=9), "limits.max_height", "the project's min_height of 10"),
        (
            UploadLimits(max_frames=2, allow_animation=False),
            "limits.max_frames",
            "while allow_animation is false",
        ),
    ],
)
def test_limits_looser_than_the_projects_or_impossible_are_refused(
    limits: UploadLimits, field: str, description: str
) -> None:
    with pytest.raises(ImageryError) as caught:
        _validate(limits)
    assert caught.value.reason == "INVALID_ARGUMENT"
    assert [v.field for v in caught.value.violations] == [field]
    assert description in caught.value.violations[0].description


def test_the_projects_values_and_stricter_ones_are_kept_and_zero_is_the_projects() -> None:
    asked = UploadLimits(max_width=4000, max_height=20, max_pixels=0, max_frames=1)
    assert _validate(asked) == UploadLimits(max_width=4000, max_height=20, max_frames=1)
    assert _validate(UploadLimits(allow_animation=False)) == UploadLimits(allow_animation=False)
    assert _validate(UploadLimits(max_frames=1, allow_animation=False)) is not None


@pytest.mark.parametrize(
    "limits", [None, UploadLimits(), UploadLimits(max_width=0), UploadLimits(allow_animation=True)]
)
def test_nothing_asked_for_is_no_limits(limits: UploadLimits | None) -> None:
    assert _validate(limits) is None


def _create() -> tuple[CreateUploadUrl, InMemoryImageRepository]:
    clock = FakeClock()
    repo = InMemoryImageRepository(clock)
    use_case = CreateUploadUrl(
        repo,
        FakeSigner(),
        requests=FakeUploadRequests(repo),
        expiry_seconds=300,
        policy=policy(),
        clock=clock,
        max_image_pixels=1000,
        max_image_frames=10,
    )
    return use_case, repo


async def test_the_limits_are_stored_with_the_pending_record() -> None:
    create, repo = _create()
    asked = UploadLimits(max_width=32, allow_animation=False)
    ticket = await create(CALLER, UploadRequest("image/png", "a.png", limits=asked))
    assert repo.records[ticket.image_id].upload_limits == asked
    plain = await create(CALLER, UploadRequest("image/png", "a.png"))
    assert repo.records[plain.image_id].upload_limits is None


async def test_the_deployments_pixel_and_frame_ceilings_apply_and_nothing_is_saved() -> None:
    create, repo = _create()
    for limits, field in (
        (UploadLimits(max_pixels=1001), "limits.max_pixels"),
        (UploadLimits(max_frames=11), "limits.max_frames"),
    ):
        with pytest.raises(ImageryError) as caught:
            await create(CALLER, UploadRequest("image/png", "a.png", limits=limits))
        assert [v.field for v in caught.value.violations] == [field]
    assert repo.records == {}
    narrow = caller(settings=ProjectSettings(max_height=100))
    with pytest.raises(ImageryError) as caught:
        await create(narrow, UploadRequest("image/png", "a", limits=UploadLimits(max_height=101)))
    assert "the project's max_height of 100" in caught.value.message


async def test_a_request_id_with_other_limits_is_reused_and_the_same_limits_a_retry() -> None:
    create, _ = _create()
    asked = UploadLimits(max_width=32)
    first = await create(CALLER, UploadRequest("image/png", "a", request_id="r", limits=asked))
    again = await create(CALLER, UploadRequest("image/png", "a", request_id="r", limits=asked))
    assert again.image_id == first.image_id
    for other in (UploadLimits(max_width=31), UploadLimits(max_width=32, max_frames=3), None):
        with pytest.raises(ImageryError) as caught:
            await create(CALLER, UploadRequest("image/png", "a", request_id="r", limits=other))
        assert caught.value.reason == "REQUEST_ID_REUSED"


def test_the_job_limits_narrow_the_deployments_and_never_widen_them() -> None:
    deployment = Limits(max_side=1000, max_pixels=10_000, max_frames=20)
    assert _job_limits(deployment, None) is deployment
    narrowed = _job_limits(
        deployment, UploadLimits(max_width=30, max_height=40, max_pixels=500, max_frames=5)
    )
    assert (narrowed.max_side, narrowed.max_pixels, narrowed.max_frames) == (40, 500, 5)
    assert _job_limits(deployment, UploadLimits(allow_animation=False)).max_frames == 1
    assert _job_limits(deployment, UploadLimits(max_width=30)).max_side == 1000
    wide = _job_limits(Limits(max_side=10, max_pixels=10, max_frames=2), UploadLimits(max_frames=9))
    assert (wide.max_side, wide.max_pixels, wide.max_frames) == (10, 10, 2)


def test_an_animation_fails_its_job_when_the_upload_allows_none() -> None:
    still_only = _job_limits(Limits(), UploadLimits(allow_animation=False))
    with pytest.raises(Rejected) as caught:
        verify(images.gif(frames=2), "image/gif", still_only)
    assert caught.value.reason == FailureReason.DIMENSIONS_EXCEEDED
    assert verify(images.gif(frames=1), "image/gif", still_only).frames == 1
    assert verify(images.gif(frames=2), "image/gif", Limits()).frames == 2


@pytest.mark.parametrize(
    ("size", "limits", "outcome"),
    [
        ((64, 48), UploadLimits(max_width=32), FailureReason.DIMENSIONS_EXCEEDED),
        ((64, 48), UploadLimits(max_height=47), FailureReason.DIMENSIONS_EXCEEDED),
        ((64, 48), UploadLimits(max_pixels=64 * 48 - 1), FailureReason.DIMENSIONS_EXCEEDED),
        ((64, 48), UploadLimits(max_width=64, max_height=48, max_pixels=64 * 48), None),
        ((64, 48), None, None),
    ],
)
def test_the_displayed_size_is_held_to_the_uploads_limits(
    size: tuple[int, int], limits: UploadLimits | None, outcome: FailureReason | None
) -> None:
    assert _outside_project_limits(*size, SETTINGS, limits) == outcome
    assert _outside_project_limits(*size, None, limits) == outcome
