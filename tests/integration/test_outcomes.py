"""The processor's Outcomes / unit-of-work contract, held against real Postgres and the
unit-test fake: guarded on `processing`, all-or-nothing, convergent, and collection-safe."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

import asyncpg
import pytest

from imagery.common.db.images import PostgresImageRepository
from imagery.common.domain import ImageRecord, ImageStatus, VariantInfo
from imagery.common.ids import new_image_id
from imagery.common.storage_keys import GLOBAL_SCOPE, original_key, upload_key, variant_key
from imagery.common.tenancy import DEFAULT_PROJECT
from imagery.processor.adapters.postgres import PostgresContentStore, PostgresOutcomes
from imagery.processor.ports import ContentStore, Outcomes, UnreferencedContent, VerifiedImage
from tests.fakes import FakeContentStore, FakeOutcomes, InMemoryImageRepository

pytestmark = pytest.mark.integration
SHA = hashlib.sha256(b"same bytes").hexdigest()
IMAGE = VerifiedImage(SHA, "jpeg", 640, 480, 12345)
SMALL = VariantInfo(
    "small", "webp", "image/webp", 400, 300, 999, variant_key(GLOBAL_SCOPE, SHA, "small", "webp")
)


@dataclass
class World:
    images: PostgresImageRepository | InMemoryImageRepository
    outcomes: Outcomes
    content: ContentStore
    references: object  # (sha256) -> awaitable reference count, or None without a row

    async def count(self, sha256: str = SHA) -> int | None:
        return await self.references(sha256)  # type: ignore[operator, no-any-return]

    async def claimed(self) -> str:
        image_id = new_image_id()
        await self.images.save(
            principal="key:test",
            record=ImageRecord(
                image_id,
                ImageStatus.PENDING,
                "image/jpeg",
                "a.jpg",
                upload_key(GLOBAL_SCOPE, image_id),
            ),
        )
        assert await self.images.claim_for_processing(image_id, stale_after_seconds=300)
        return image_id

    async def store_new(self, image_id: str, variants: tuple[VariantInfo, ...] = ()) -> bool:
        """The processor's path for new content: reserve, (write objects), reference."""
        async with self.outcomes.unit_of_work() as uow:
            reservation = await uow.reserve_content(IMAGE, variants)
        if reservation is None:
            return False
        async with self.outcomes.unit_of_work() as uow:
            assert await uow.lock_processing(image_id)
            if not await uow.reference_content(IMAGE.sha256, reservation):
                return False
            await uow.mark_ready(image_id, IMAGE)
        return True

    async def claim(
        self, *, grace: float = 0, lease: float = 0, lifetime: float = 300
    ) -> list[UnreferencedContent]:
        return await self.content.claim_unreferenced(
            grace_seconds=grace,
            reservation_lease_seconds=lease,
            claim_lifetime_seconds=lifetime,
            limit=10,
        )

    async def later(self, seconds: float = 0.01) -> None:
        """Let time pass: the fake's clock, or the real one Postgres' now() follows."""
        if isinstance(self.images, InMemoryImageRepository):
            self.images.clock.advance(seconds)
        else:
            await asyncio.sleep(seconds)

    async def link(self, image_id: str, declared: str = "jpeg") -> bool:
        async with self.outcomes.unit_of_work() as uow:
            assert await uow.lock_processing(image_id)
            linked = await uow.link_stored_content(SHA, declared)
            if linked.linked:
                assert linked.image is not None
                await uow.mark_ready(image_id, linked.image)
        return linked.linked


@pytest.fixture(params=["postgres", "fake"])
def world(request: pytest.FixtureRequest) -> World:
    if request.param == "fake":
        images = InMemoryImageRepository()
        outcomes = FakeOutcomes(images)

        async def fake_count(sha256: str) -> int | None:
            return outcomes.references.get(sha256)

        return World(images, outcomes, FakeContentStore(images), fake_count)
    pool: asyncpg.Pool = request.getfixturevalue("pool")

    async def count(sha256: str) -> int | None:
        value: int | None = await pool.fetchval(
            "SELECT reference_count FROM image_blobs WHERE sha256 = $1", sha256
        )
        return value

    return World(
        PostgresImageRepository(pool), PostgresOutcomes(pool), PostgresContentStore(pool), count
    )


async def test_concurrent_identical_uploads_converge_on_one_blob(world: World) -> None:
    ids = [await world.claimed() for _ in range(20)]
    assert all(await asyncio.gather(*(world.store_new(i) for i in ids)))
    assert await world.count() == 20
    for image_id in ids:
        record = await world.images.find_by_id(DEFAULT_PROJECT, image_id)
        assert record is not None and (record.status, record.sha256) == (ImageStatus.READY, SHA)
    linked_id = await world.claimed()
    assert await world.link(linked_id)
    assert await world.count() == 21


async def test_variants_are_stored_with_new_content(world: World) -> None:
    image_id = await world.claimed()
    assert await world.store_new(image_id, (SMALL,))
    record = await world.images.find_by_id(DEFAULT_PROJECT, image_id)
    assert record is not None and record.variants == (SMALL,)


async def test_outcomes_are_written_only_while_processing(world: World) -> None:
    image_id = await world.claimed()
    assert await world.outcomes.mark_failed(image_id, "CORRUPT", size_bytes=10)
    assert not await world.outcomes.mark_failed(image_id, "EMPTY")
    async with world.outcomes.unit_of_work() as uow:
        assert not await uow.lock_processing(image_id)
    record = await world.images.find_by_id(DEFAULT_PROJECT, image_id)
    assert record is not None
    assert (record.status, record.failure_reason, record.size_bytes) == (
        ImageStatus.FAILED,
        "CORRUPT",
        10,
    )


async def test_a_unit_of_work_that_raises_leaves_nothing_behind(world: World) -> None:
    image_id = await world.claimed()

    async def gives_up() -> None:
        async with world.outcomes.unit_of_work() as uow:
            assert await uow.reserve_content(IMAGE, (SMALL,))
            assert await uow.lock_processing(image_id)
            await uow.mark_ready(image_id, IMAGE)
            raise RuntimeError("the use case gave up")

    with pytest.raises(RuntimeError):
        await gives_up()
    assert await world.count() is None, "the reservation rolled back"
    record = await world.images.find_by_id(DEFAULT_PROJECT, image_id)
    assert record is not None and record.status is ImageStatus.PROCESSING


async def test_a_released_claim_can_be_claimed_again(world: World) -> None:
    image_id = await world.claimed()
    await world.outcomes.release_claim(image_id)
    assert (await world.images.find_by_id(DEFAULT_PROJECT, image_id)).status is ImageStatus.PENDING  # type: ignore[union-attr]
    assert await world.images.claim_for_processing(image_id, stale_after_seconds=300) is not None


async def test_known_content_of_another_format_is_a_mismatch_and_changes_nothing(
    world: World,
) -> None:
    assert await world.store_new(await world.claimed())
    liar = await world.claimed()
    async with world.outcomes.unit_of_work() as uow:
        result = await uow.link_stored_content(SHA, "png")
        unknown = await uow.link_stored_content("f" * 64, "png")
    assert (result.linked, result.mismatch) == (False, "jpeg")
    assert (unknown.linked, unknown.mismatch) == (False, None)
    assert await world.count() == 1
    assert (await world.images.find_by_id(DEFAULT_PROJECT, liar)).status is ImageStatus.PROCESSING  # type: ignore[union-attr]


async def test_reserved_content_is_not_linked_until_its_objects_are_stored(world: World) -> None:
    async with world.outcomes.unit_of_work() as uow:
        assert await uow.reserve_content(IMAGE, ())
    assert not await world.link(await world.claimed()), "its objects may not be written yet"
    assert await world.store_new(await world.claimed())
    assert await world.link(await world.claimed())
    assert await world.count() == 2


async def test_the_last_reference_leaves_a_tombstone_that_a_new_upload_revives(
    world: World,
) -> None:
    first = await world.claimed()
    assert await world.store_new(first)
    deleted = await world.images.delete(DEFAULT_PROJECT, first, principal="key:test")
    assert deleted is not None
    assert await world.count() == 0, "a tombstone"
    assert await world.link(await world.claimed()), "revived: the objects are still there"
    assert await world.count() == 1
    assert await world.claim() == []


async def test_collection_claims_only_unreferenced_content_past_its_grace(world: World) -> None:
    first = await world.claimed()
    assert await world.store_new(first, (SMALL,))
    assert await world.claim() == []
    await world.images.delete(DEFAULT_PROJECT, first, principal="key:test")
    assert await world.claim(grace=3600) == []
    (claimed,) = await world.claim()
    assert claimed.sha256 == SHA
    assert set(claimed.keys) == {SMALL.key, original_key(GLOBAL_SCOPE, SHA)}


async def test_nothing_links_to_or_reserves_content_being_collected(world: World) -> None:
    first = await world.claimed()
    assert await world.store_new(first)
    await world.images.delete(DEFAULT_PROJECT, first, principal="key:test")
    (claimed,) = await world.claim()
    newcomer = await world.claimed()
    assert not await world.link(newcomer)
    assert not await world.store_new(newcomer), "must wait until the collection is over"
    assert await world.count() == 0
    assert await world.content.forget(claimed)
    assert await world.count() is None
    assert await world.store_new(newcomer), "written afresh once the content is gone"
    assert await world.count() == 1


async def test_a_reservation_that_lapsed_into_collection_is_not_referenced(world: World) -> None:
    image_id = await world.claimed()
    async with world.outcomes.unit_of_work() as uow:
        mine = await uow.reserve_content(IMAGE, ())
    assert mine is not None
    (claimed,) = await world.claim()
    async with world.outcomes.unit_of_work() as uow:
        assert await uow.lock_processing(image_id)
        assert not await uow.reference_content(SHA, mine), "its objects may be gone"
    assert await world.content.forget(claimed)
    async with world.outcomes.unit_of_work() as uow:
        theirs = await uow.reserve_content(IMAGE, ())
    assert theirs is not None and theirs != mine, "reserved afresh by someone else"
    async with world.outcomes.unit_of_work() as uow:
        assert not await uow.reference_content(SHA, mine), "never completes another reservation"
        assert await uow.reference_content(SHA, theirs)


async def test_a_collector_that_died_is_taken_over_after_the_claim_lifetime(
    world: World,
) -> None:
    first = await world.claimed()
    assert await world.store_new(first)
    await world.images.delete(DEFAULT_PROJECT, first, principal="key:test")
    (dead,) = await world.claim()
    await world.later()
    assert await world.claim(lifetime=3600) == [], "a live claim is left alone"
    assert await world.content.still_claimed(dead, within_seconds=3600)
    assert not await world.content.still_claimed(dead, within_seconds=0), "too old to act on"
    (taken,) = await world.claim(lifetime=0)
    assert taken.sha256 == dead.sha256
    assert not await world.content.still_claimed(dead, within_seconds=3600), "superseded"
    assert not await world.content.forget(dead), "the dead collector's claim is void"
    assert await world.content.forget(taken)


async def test_a_reservation_is_collected_after_its_lease_a_tombstone_after_the_grace(
    world: World,
) -> None:
    async with world.outcomes.unit_of_work() as uow:
        assert await uow.reserve_content(IMAGE, ())
    await world.later()
    assert await world.claim(grace=0, lease=3600) == [], "its writer may still be writing"
    (lapsed,) = await world.claim(grace=3600, lease=0)
    assert lapsed.sha256 == SHA


async def test_linking_reports_content_that_is_being_collected(world: World) -> None:
    first = await world.claimed()
    assert await world.store_new(first)
    await world.images.delete(DEFAULT_PROJECT, first, principal="key:test")
    await world.claim()
    async with world.outcomes.unit_of_work() as uow:
        result = await uow.link_stored_content(SHA, "jpeg")
    assert (result.linked, result.collecting) == (False, True)


async def test_stored_keys_name_every_object_of_stored_content_only(world: World) -> None:
    async with world.outcomes.unit_of_work() as uow:
        assert await uow.reserve_content(IMAGE, (SMALL,))
    assert await world.outcomes.stored_keys(SHA) is None, "reserved, not stored yet"
    first = await world.claimed()
    assert await world.store_new(first, (SMALL,))
    keys = await world.outcomes.stored_keys(SHA)
    assert keys is not None and set(keys) == {SMALL.key, original_key(GLOBAL_SCOPE, SHA)}
    await world.images.delete(DEFAULT_PROJECT, first, principal="key:test")
    await world.claim()
    assert await world.outcomes.stored_keys(SHA) is None, "being collected"
