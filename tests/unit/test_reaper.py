from __future__ import annotations

import dataclasses
from datetime import timedelta

from imagery.common.domain import ImageRecord, ImageStatus
from imagery.common.ids import new_image_id
from imagery.common.storage_keys import GLOBAL_SCOPE, upload_key
from imagery.processor.imaging import Limits
from imagery.processor.use_cases.finish_unfinished import Reaper
from imagery.processor.use_cases.process_upload import UploadProcessor
from tests import images
from tests.fakes import FakeObjects, FakeOutcomes, InlineJobs, InMemoryImageRepository

EXPIRY_GRACE = 3900


class World:
    def __init__(self) -> None:
        self.images = InMemoryImageRepository()
        self.objects = FakeObjects()
        process = UploadProcessor(
            self.images,
            FakeOutcomes(self.images),
            self.objects,
            InlineJobs(),
            limits=Limits(),
            max_upload_bytes=10_000,
            claim_stale_seconds=300,
            spec=None,
        )
        self.reaper = Reaper(
            self.images,
            self.objects,
            process,
            abandoned_after_seconds=EXPIRY_GRACE,
            claim_stale_seconds=300,
            lease_seconds=10,  # one sweeper: due again soon after a pass
            clock=self.images.clock,
        )

    async def record(
        self, status: ImageStatus = ImageStatus.PENDING, body: bytes | None = None
    ) -> str:
        image_id = new_image_id()
        await self.images.save(
            ImageRecord(image_id, status, "image/jpeg", "x.jpg", upload_key(GLOBAL_SCOPE, image_id))
        )
        if body is not None:
            self.objects.objects[upload_key(GLOBAL_SCOPE, image_id)] = (body, "image/jpeg")
        return image_id

    def age(self, seconds: float) -> None:
        self.images.clock.advance(seconds)


async def test_an_upload_url_never_used_ends_failed_once_it_cannot_be_used_any_more() -> None:
    world = World()
    image_id = await world.record()
    world.age(EXPIRY_GRACE - 10)
    assert await world.reaper.sweep() == {}
    assert world.images.records[image_id].status is ImageStatus.PENDING
    world.age(20)
    assert await world.reaper.sweep() == {"not_uploaded": 1}
    record = world.images.records[image_id]
    assert (record.status, record.failure_reason) == (ImageStatus.FAILED, "NOT_UPLOADED")


async def test_an_upload_whose_event_was_lost_is_processed() -> None:
    world = World()
    image_id = await world.record(body=images.jpeg())
    world.age(400)
    assert await world.reaper.sweep() == {"ready": 1}
    assert world.images.records[image_id].status is ImageStatus.READY
    assert upload_key(GLOBAL_SCOPE, image_id) not in world.objects.objects


async def test_a_stale_claim_is_taken_over_and_a_fresh_one_left_alone() -> None:
    world = World()
    stale = await world.record(body=images.jpeg(32, 32))
    await world.images.claim_for_processing(stale, stale_after_seconds=300)
    world.age(301)
    fresh = await world.record(body=images.jpeg(16, 16))
    await world.images.claim_for_processing(fresh, stale_after_seconds=300)
    assert await world.reaper.sweep() == {"ready": 1}
    assert world.images.records[stale].status is ImageStatus.READY
    assert world.images.records[fresh].status is ImageStatus.PROCESSING


async def test_finished_records_are_not_touched() -> None:
    world = World()
    image_id = await world.record()
    world.images.records[image_id] = dataclasses.replace(
        world.images.records[image_id], status=ImageStatus.READY
    )
    world.age(timedelta(days=2).total_seconds())
    assert await world.reaper.sweep() == {}
