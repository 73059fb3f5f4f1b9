from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest

from imagery.common.domain import ImageRecord, ImageStatus
from imagery.common.errors import DependencyUnavailable, FailureReason
from imagery.common.ids import new_image_id
from imagery.common.storage_keys import GLOBAL_SCOPE, upload_key
from imagery.common.tenancy import DEFAULT_PROJECT, ProjectSettings, content_address
from imagery.processor.imaging import Limits, Rejected
from imagery.processor.ports import JobResult, RetryLater
from imagery.processor.use_cases.process_upload import Outcome, UploadProcessor
from tests import images
from tests.fakes import (
    FakeContentStore,
    FakeObjects,
    FakeOutcomes,
    InlineJobs,
    InMemoryImageRepository,
)
from tests.principals import policy

MAX = 10_000


class World:
    def __init__(self) -> None:
        self.images = InMemoryImageRepository()
        self.outcomes = FakeOutcomes(self.images)
        self.objects = FakeObjects()
        self.work = InlineJobs()
        self.process = UploadProcessor(
            self.images,
            self.outcomes,
            self.objects,
            self.work,
            limits=Limits(),
            max_upload_bytes=MAX,
            claim_stale_seconds=300,
            policy=policy(max_upload_bytes=MAX),
        )

    async def upload(self, body: bytes | None, content_type: str = "image/jpeg") -> str:
        image_id = new_image_id()
        await self.images.save(
            ImageRecord(
                image_id, ImageStatus.PENDING, content_type, "x", upload_key(GLOBAL_SCOPE, image_id)
            )
        )
        if body is not None:
            self.objects.objects[upload_key(GLOBAL_SCOPE, image_id)] = (body, content_type)
        return image_id

    def status(self, image_id: str) -> tuple[ImageStatus, str | None]:
        record = self.images.records[image_id]
        return record.status, record.failure_reason


@pytest.fixture
def world() -> World:
    return World()


async def test_a_good_upload_ends_ready_and_its_upload_object_goes(world: World) -> None:
    image_id = await world.upload(images.jpeg(64, 48))
    result = await world.process(image_id, upload_key(GLOBAL_SCOPE, image_id))
    assert result.outcome is Outcome.READY
    record = world.images.records[image_id]
    assert (record.status, record.width, record.height, record.detected_format) == (
        ImageStatus.READY,
        64,
        48,
        "jpeg",
    )
    assert record.sha256 is not None and world.outcomes.references[record.sha256] == 1
    assert upload_key(GLOBAL_SCOPE, image_id) not in world.objects.objects


async def test_the_original_is_copied_by_the_store_not_uploaded_again(world: World) -> None:
    body = images.jpeg(64, 48)
    image_id = await world.upload(body)
    await world.process(image_id, upload_key(GLOBAL_SCOPE, image_id))
    sha = world.images.records[image_id].sha256
    assert world.objects.copies == [(upload_key(GLOBAL_SCOPE, image_id), f"originals/{sha}")]
    assert world.objects.objects[f"originals/{sha}"] == (body, "image/jpeg")


async def test_an_upload_replaced_after_it_was_read_never_becomes_the_original(
    world: World,
) -> None:
    verified = images.jpeg(64, 48)
    image_id = await world.upload(verified)

    def late_put(key: str) -> None:  # the client PUTs again with its still-valid URL
        world.objects.objects[key] = (images.html(), "image/jpeg")

    world.objects.before_copy = late_put
    await world.process(image_id, upload_key(GLOBAL_SCOPE, image_id))
    sha = world.images.records[image_id].sha256
    assert world.objects.objects[f"originals/{sha}"] == (verified, "image/jpeg"), (
        "the store's checksum of the copy did not match: the verified bytes were written"
    )


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "EMPTY"),
        (b"x" * (MAX + 1), "TOO_LARGE"),
        (images.html(), "UNSUPPORTED_FORMAT"),
        (images.png(), "CONTENT_TYPE_MISMATCH"),
        (images.truncated_jpeg(), "CORRUPT"),
    ],
)
async def test_bad_uploads_fail_with_their_reason_and_the_object_goes(
    world: World, body: bytes | None, reason: str
) -> None:
    image_id = await world.upload(body)
    result = await world.process(image_id, upload_key(GLOBAL_SCOPE, image_id))
    assert (result.outcome, result.reason) == (Outcome.FAILED, reason)
    assert world.status(image_id) == (ImageStatus.FAILED, reason)
    assert upload_key(GLOBAL_SCOPE, image_id) not in world.objects.objects
    assert world.outcomes.references == {}


async def test_an_event_before_the_upload_leaves_the_record_waiting_for_it(world: World) -> None:
    image_id = await world.upload(None)
    result = await world.process(image_id, upload_key(GLOBAL_SCOPE, image_id))
    assert result.outcome is Outcome.DROPPED and result.outcome.done
    assert world.status(image_id) == (ImageStatus.PENDING, None), "the real PUT still counts"
    world.objects.objects[upload_key(GLOBAL_SCOPE, image_id)] = (images.jpeg(), "image/jpeg")
    assert (await world.process(image_id, upload_key(GLOBAL_SCOPE, image_id))).outcome is (
        Outcome.READY
    )


async def test_an_oversized_upload_is_never_downloaded_whole(world: World) -> None:
    image_id = await world.upload(b"x" * (MAX + 100))
    await world.process(image_id, upload_key(GLOBAL_SCOPE, image_id))
    assert world.objects.bytes_read <= MAX + 1, "one ranged GET, cut at the limit"
    record = world.images.records[image_id]
    assert (record.failure_reason, record.size_bytes) == ("TOO_LARGE", MAX + 100)


async def test_an_unknown_image_only_loses_its_object(world: World) -> None:
    stray = new_image_id()
    world.objects.objects[upload_key(GLOBAL_SCOPE, stray)] = (images.jpeg(), "image/jpeg")
    assert (await world.process(stray, upload_key(GLOBAL_SCOPE, stray))).outcome is Outcome.UNKNOWN
    assert world.objects.objects == {}


async def test_a_duplicate_delivery_changes_nothing(world: World) -> None:
    image_id = await world.upload(images.jpeg())
    await world.process(image_id, upload_key(GLOBAL_SCOPE, image_id))
    before = world.images.records[image_id]
    world.objects.objects[upload_key(GLOBAL_SCOPE, image_id)] = (
        images.png(),
        "image/jpeg",
    )  # a late re-PUT
    assert (
        await world.process(image_id, upload_key(GLOBAL_SCOPE, image_id))
    ).outcome is Outcome.DUPLICATE
    assert world.images.records[image_id] == before
    assert sum(world.outcomes.references.values()) == 1
    assert not [k for k in world.objects.objects if k.startswith("uploads/")], "late object cleaned"


async def test_a_record_claimed_by_another_worker_is_left_alone(world: World) -> None:
    image_id = await world.upload(images.jpeg())
    await world.images.claim_for_processing(image_id, stale_after_seconds=300)
    assert (
        await world.process(image_id, upload_key(GLOBAL_SCOPE, image_id))
    ).outcome is Outcome.BUSY
    assert upload_key(GLOBAL_SCOPE, image_id) in world.objects.objects
    assert world.status(image_id) == (ImageStatus.PROCESSING, None)


async def test_a_transient_failure_gives_the_claim_back(world: World) -> None:
    image_id = await world.upload(images.jpeg())
    world.objects.fail_reads = DependencyUnavailable(
        "S3 GetObject failed (SlowDown): retry shortly."
    )
    with pytest.raises(DependencyUnavailable):
        await world.process(image_id, upload_key(GLOBAL_SCOPE, image_id))
    assert world.status(image_id) == (ImageStatus.PENDING, None)
    assert upload_key(GLOBAL_SCOPE, image_id) in world.objects.objects
    world.objects.fail_reads = None
    assert (
        await world.process(image_id, upload_key(GLOBAL_SCOPE, image_id))
    ).outcome is Outcome.READY


async def test_identical_content_shares_one_blob_and_is_processed_once(world: World) -> None:
    body = images.jpeg(32, 32)
    first, second = await world.upload(body), await world.upload(body)
    await world.process(first, upload_key(GLOBAL_SCOPE, first))
    stored = {k: v for k, v in world.objects.objects.items() if not k.startswith("uploads/")}
    world.work.calls = 0
    assert (await world.process(second, upload_key(GLOBAL_SCOPE, second))).outcome is Outcome.READY
    sha = world.images.records[first].sha256
    assert sha is not None and sha == world.images.records[second].sha256
    assert world.outcomes.references == {sha: 2}
    assert world.work.calls == 0, "known content is neither verified nor rendered again"
    assert world.objects.objects == stored, "nor stored again; its upload object is gone"


async def test_known_content_whose_objects_are_gone_is_rebuilt_from_the_new_upload(
    world: World,
) -> None:
    body = images.jpeg(32, 32)
    first, second = await world.upload(body), await world.upload(body)
    await world.process(first, upload_key(GLOBAL_SCOPE, first))
    stored = {k: v for k, v in world.objects.objects.items() if not k.startswith("uploads/")}
    for key in stored:  # a lifecycle rule, or a local S3 that started empty
        del world.objects.objects[key]
    assert (await world.process(second, upload_key(GLOBAL_SCOPE, second))).outcome is Outcome.READY
    assert world.objects.objects == stored, "every object is back"
    sha = world.images.records[second].sha256
    assert sha is not None and world.outcomes.references == {sha: 2}


async def test_known_content_declared_as_something_else_fails(world: World) -> None:
    body = images.png(20, 20)
    first = await world.upload(body, "image/png")
    await world.process(first, upload_key(GLOBAL_SCOPE, first))
    liar = await world.upload(body, "image/gif")
    result = await world.process(liar, upload_key(GLOBAL_SCOPE, liar))
    assert (result.outcome, result.reason) == (Outcome.FAILED, "CONTENT_TYPE_MISMATCH")
    assert list(world.outcomes.references.values()) == [1]


async def test_known_heic_content_declared_as_image_heif_is_linked(world: World) -> None:
    body = images.heic(40, 30)
    first = await world.upload(body, "image/heic")
    await world.process(first, upload_key(GLOBAL_SCOPE, first))
    family = await world.upload(body, "image/heif")  # the HEIF family's type names it too
    result = await world.process(family, upload_key(GLOBAL_SCOPE, family))
    assert result.outcome is Outcome.READY
    assert list(world.outcomes.references.values()) == [2]
    jpeg = await world.upload(body, "image/jpeg")
    refused = await world.process(jpeg, upload_key(GLOBAL_SCOPE, jpeg))
    assert (refused.outcome, refused.reason) == (Outcome.FAILED, "CONTENT_TYPE_MISMATCH")


async def test_new_content_stores_the_original_and_every_variant_made_at_ingest(
    world: World,
) -> None:
    body = images.jpeg(640, 480)
    image_id = await world.upload(body)
    await world.process(image_id, upload_key(GLOBAL_SCOPE, image_id))
    sha = world.images.records[image_id].sha256
    keys = set(world.objects.objects)
    assert f"originals/{sha}" in keys and world.objects.objects[f"originals/{sha}"][0] == body
    expected = {
        f"variants/{sha}/{n}.{e}" for n in ("thumbnail", "small", "medium") for e in ("webp", "jpg")
    }
    assert {k for k in keys if k.startswith("variants/")} == expected, (
        "the default profile renders large and original on their first request"
    )
    assert (
        world.objects.cache_control[f"variants/{sha}/small.webp"]
        == "public, max-age=31536000, immutable"
    )


async def test_a_claim_that_could_not_be_given_back_is_retaken_at_once(world: World) -> None:
    image_id = await world.upload(images.jpeg())
    world.objects.fail_reads = DependencyUnavailable("S3 down")

    async def database_gone(image_id: str) -> None:
        raise ConnectionResetError("database went away")

    world.outcomes.release_claim = database_gone  # type: ignore[method-assign]
    with pytest.raises(DependencyUnavailable):
        await world.process(image_id, upload_key(GLOBAL_SCOPE, image_id))
    assert world.status(image_id) == (ImageStatus.PROCESSING, None), "stuck: the release failed"
    world.objects.fail_reads = None
    result = await world.process(image_id, upload_key(GLOBAL_SCOPE, image_id))
    assert result.outcome is Outcome.READY, "no waiting for the 300 s stale-claim timeout"


async def test_a_file_whose_jobs_never_end_it_fails_after_the_last_attempt(
    world: World,
) -> None:
    image_id = await world.upload(images.jpeg())
    key = upload_key(GLOBAL_SCOPE, image_id)

    async def infrastructure_trouble(*_: object, **__: object) -> None:
        raise DependencyUnavailable("S3 PutObject failed (SlowDown): retry shortly.")

    world.objects.put = infrastructure_trouble  # type: ignore[method-assign]
    for _ in range(5):
        with pytest.raises(DependencyUnavailable):
            await world.process(image_id, key)
        assert world.status(image_id) == (ImageStatus.PENDING, None), "retried"
    result = await world.process(image_id, key)
    assert (result.outcome, result.reason) == (Outcome.FAILED, "RETRIES_EXHAUSTED")
    assert world.images.records[image_id].attempts == 6


async def test_a_job_lost_with_its_processor_does_not_count_against_the_file(
    world: World,
) -> None:
    image_id = await world.upload(images.jpeg())
    await world.images.claim_for_processing(image_id, stale_after_seconds=300)
    await world.outcomes.start_attempt(image_id)  # the job started, then its processor died
    world.images.clock.advance(301)
    result = await world.process(image_id, upload_key(GLOBAL_SCOPE, image_id))
    assert result.outcome is Outcome.READY
    assert world.images.records[image_id].attempts == 1, "only the attempt that finished"


async def test_content_being_collected_makes_the_upload_wait_without_a_job(world: World) -> None:
    body = images.jpeg(32, 32)
    first, second = await world.upload(body), await world.upload(body)
    await world.process(first, upload_key(GLOBAL_SCOPE, first))
    await world.images.delete(DEFAULT_PROJECT, first, principal="key:test")
    await FakeContentStore(world.images).claim_unreferenced(
        grace_seconds=0, reservation_lease_seconds=0, claim_lifetime_seconds=300, limit=10
    )
    world.work.calls = 0
    result = await world.process(second, upload_key(GLOBAL_SCOPE, second))
    assert result.outcome is Outcome.BUSY
    assert world.work.calls == 0, "nothing verified or rendered while it cannot be stored"
    assert world.status(second) == (ImageStatus.PENDING, None), "claim given back"


async def test_a_reservation_that_lapsed_while_writing_makes_the_upload_wait(
    world: World,
) -> None:
    image_id = await world.upload(images.jpeg(32, 32))
    put = world.objects.put

    async def collected_meanwhile(key: str, body: bytes, **kwargs: Any) -> None:
        await put(key, body, **kwargs)
        for blob in world.images.blobs.values():
            blob.collecting_since = world.images.clock()

    world.objects.put = collected_meanwhile  # type: ignore[method-assign]
    result = await world.process(image_id, upload_key(GLOBAL_SCOPE, image_id))
    assert result.outcome is Outcome.BUSY
    assert world.status(image_id) == (ImageStatus.PENDING, None)
    assert world.outcomes.references == {next(iter(world.images.blobs)): 0}, "never referenced"


async def test_a_job_the_kernel_killed_is_retried_once_before_it_counts(world: World) -> None:
    image_id = await world.upload(images.jpeg())
    key = upload_key(GLOBAL_SCOPE, image_id)

    async def killed(*_: object) -> JobResult:
        raise Rejected(FailureReason.MEMORY_LIMIT, "exited with -9", by_the_kernel=True)

    world.work.verify_and_render = killed  # type: ignore[method-assign, assignment]
    with pytest.raises(RetryLater):
        await world.process(image_id, key)
    assert world.status(image_id) == (ImageStatus.PENDING, None), "not the file's fault yet"
    result = await world.process(image_id, key)
    assert (result.outcome, result.reason) == (Outcome.FAILED, "MEMORY_LIMIT")


async def _upload_as(world: World, body: bytes, project: str, scope: str, **settings: int) -> str:
    image_id = await world.upload(body)
    record = world.images.records[image_id]
    world.images.records[image_id] = dataclasses.replace(
        record,
        project_id=project,
        content_scope=scope,
        project_settings=ProjectSettings(**settings),  # type: ignore[arg-type]
    )
    return image_id


async def test_identical_bytes_in_two_projects_are_two_contents(world: World) -> None:
    body = images.jpeg(40, 30)
    mine = await _upload_as(world, body, "default", "")
    theirs = await _upload_as(world, body, "other-team", "ab" * 16)
    for image_id in (mine, theirs):
        assert (await world.process(image_id, upload_key(GLOBAL_SCOPE, image_id))).outcome is (
            Outcome.READY
        )
    a, b = world.images.records[mine], world.images.records[theirs]
    assert a.sha256 == b.sha256, "both report the bytes' own SHA-256"
    assert a.content == a.sha256 and b.content == content_address("ab" * 16, b.sha256 or "")
    assert a.content != b.content, "separate content: no object or row shared"
    assert world.work.calls == 2, "no deduplication across projects"
    assert {k for v in b.variants for k in [v.key]}.isdisjoint({v.key for v in a.variants})


async def test_a_projects_own_dimension_limits_apply(world: World) -> None:
    small = await _upload_as(world, images.jpeg(40, 30), "default", "", min_width=100)
    wide = await _upload_as(world, images.jpeg(400, 30), "default", "", max_width=300)
    await world.process(small, upload_key(GLOBAL_SCOPE, small))
    await world.process(wide, upload_key(GLOBAL_SCOPE, wide))
    assert world.status(small) == (ImageStatus.FAILED, FailureReason.TOO_SMALL)
    assert world.status(wide) == (ImageStatus.FAILED, FailureReason.DIMENSIONS_EXCEEDED)


async def test_known_content_is_held_to_the_projects_limits_too(world: World) -> None:
    body = images.jpeg(40, 30)
    first = await _upload_as(world, body, "default", "")
    await world.process(first, upload_key(GLOBAL_SCOPE, first))
    again = await _upload_as(world, body, "default", "", min_width=100)
    await world.process(again, upload_key(GLOBAL_SCOPE, again))
    assert world.status(again) == (ImageStatus.FAILED, FailureReason.TOO_SMALL)
    assert list(world.outcomes.references.values()) == [1], "the refused link was undone"


async def test_an_upload_of_blocked_bytes_fails_blocked_and_stores_nothing(world: World) -> None:
    body = images.jpeg(64, 48)
    world.images.blocked.add(hashlib.sha256(body).hexdigest())
    image_id = await world.upload(body)
    result = await world.process(image_id, upload_key(GLOBAL_SCOPE, image_id))
    assert (result.outcome, result.reason) == (Outcome.FAILED, "BLOCKED")
    assert world.status(image_id) == (ImageStatus.FAILED, "BLOCKED")
    assert world.objects.objects == {} and world.outcomes.references == {}


async def test_bytes_blocked_while_processing_never_turn_ready(world: World) -> None:
    body = images.jpeg(64, 48)
    image_id = await world.upload(body)
    digest = hashlib.sha256(body).hexdigest()
    original = world.outcomes.is_blocked

    async def blocked_after_the_first_look(sha256: str) -> bool:
        found = await original(sha256)
        world.images.blocked.add(digest)  # the takedown commits right after the first check
        return found

    world.outcomes.is_blocked = blocked_after_the_first_look  # type: ignore[method-assign,assignment]
    result = await world.process(image_id, upload_key(GLOBAL_SCOPE, image_id))
    assert (result.outcome, result.reason) == (Outcome.FAILED, "BLOCKED")
    assert world.status(image_id) == (ImageStatus.FAILED, "BLOCKED")
    assert set(world.outcomes.references.values()) <= {0}, "no reference taken"
