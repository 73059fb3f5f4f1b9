"""An upload's own limits in Postgres: saved with the pending record (with and without the
project's quotas, whose statement numbers its parameters differently) and handed to the
processor with its claim."""

from __future__ import annotations

import asyncpg
import pytest

from imagery.common.db.images import PostgresImageRepository
from imagery.common.domain import ImageRecord, ImageStatus
from imagery.common.ids import new_image_id
from imagery.common.quotas import UNLIMITED, Quotas
from imagery.common.storage_keys import GLOBAL_SCOPE, upload_key
from imagery.common.upload_limits import UploadLimits


def _pending(limits: UploadLimits | None) -> ImageRecord:
    image_id = new_image_id()
    return ImageRecord(
        id=image_id,
        status=ImageStatus.PENDING,
        content_type="image/gif",
        file_name="a.gif",
        object_key=upload_key(GLOBAL_SCOPE, image_id),
        upload_limits=limits,
    )


@pytest.mark.parametrize("quotas", [UNLIMITED, Quotas(images=100)])
async def test_the_limits_are_saved_and_come_back_with_the_claim(
    pool: asyncpg.Pool, quotas: Quotas
) -> None:
    repo = PostgresImageRepository(pool)
    asked = UploadLimits(max_width=32, max_pixels=1000, allow_animation=False)
    limited, plain = _pending(asked), _pending(None)
    for record in (limited, plain):
        await repo.save(record, principal="key:test", quotas=quotas)

    claimed = await repo.claim_for_processing(limited.id, stale_after_seconds=600)
    assert claimed is not None and claimed.upload_limits == asked
    other = await repo.claim_for_processing(plain.id, stale_after_seconds=600)
    assert other is not None and other.upload_limits is None
    stored = await pool.fetchval(
        "SELECT upload_limits::text FROM image_records WHERE id = $1", limited.id
    )
    assert stored == '{"max_width": 32, "max_pixels": 1000, "allow_animation": false}'
