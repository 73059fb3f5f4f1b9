"""Which failures keep the upload's bytes under `retained/` (for `imagery-admin reprocess`),
with the processing path on fakes."""

from __future__ import annotations

import pytest

from imagery.common.domain import ImageStatus
from imagery.common.errors import DependencyUnavailable
from imagery.common.storage_keys import (
    GLOBAL_SCOPE,
    image_id_from_retained_key,
    retained_key,
    upload_key,
)
from imagery.processor.use_cases.process_upload import Outcome
from tests import images
from tests.unit.test_process_upload import World


@pytest.fixture
def world() -> World:
    return World()


async def test_retries_exhausted_keeps_the_bytes_for_the_configured_days(world: World) -> None:
    body = images.jpeg()
    image_id = await world.upload(body)
    key = upload_key(GLOBAL_SCOPE, image_id)

    async def infrastructure_trouble(*_: object, **__: object) -> None:
        raise DependencyUnavailable("S3 PutObject failed (SlowDown): retry shortly.")

    world.objects.put = infrastructure_trouble  # type: ignore[method-assign]
    for _ in range(5):
        with pytest.raises(DependencyUnavailable):
            await world.process(image_id, key)
    result = await world.process(image_id, key)
    assert (result.outcome, result.reason) == (Outcome.FAILED, "RETRIES_EXHAUSTED")
    assert world.objects.objects[retained_key(GLOBAL_SCOPE, image_id)][0] == body
    assert key not in world.objects.objects
    assert world.outcomes.retained == {image_id: 7}


async def test_a_fault_of_the_file_keeps_nothing(world: World) -> None:
    image_id = await world.upload(images.truncated_jpeg())
    result = await world.process(image_id, upload_key(GLOBAL_SCOPE, image_id))
    assert (result.outcome, result.reason) == (Outcome.FAILED, "CORRUPT")
    assert world.status(image_id) == (ImageStatus.FAILED, "CORRUPT")
    assert world.objects.objects == {}
    assert world.outcomes.retained == {}


def test_retained_keys_name_their_image_and_only_in_their_scope() -> None:
    key = retained_key(GLOBAL_SCOPE, "01HZX3Q0000000000000000000")
    assert key == "retained/01HZX3Q0000000000000000000"
    assert image_id_from_retained_key(GLOBAL_SCOPE, key) == "01HZX3Q0000000000000000000"
    assert image_id_from_retained_key("tenant/", key) is None
    assert image_id_from_retained_key(GLOBAL_SCOPE, "uploads/01HZX3Q0000000000000000000") is None
