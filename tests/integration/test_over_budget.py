"""Byte budgets against real Postgres, the local S3 and the isolated job runner: a variant
that even its preset's quality floor cannot fit in the budget is stored all the same, its row
marked over budget and a line logged, on the upload path and on a render after ingest."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import asyncpg
import pytest
from PIL import Image

from imagery.common.presets import Preset
from imagery.common.storage_keys import GLOBAL_SCOPE, variant_key
from imagery.processor.adapters.isolation import IsolatedRunner, JobLimits
from imagery.processor.adapters.renders import PostgresRenderRequests
from imagery.processor.adapters.s3 import S3ObjectStore
from imagery.processor.use_cases.render_variant import RenderOutcome
from tests.render_stack import address, ask_lazily, project, render_variant, upload

pytestmark = pytest.mark.integration
TEAM = "budget-team"
BUDGET = 1_024  # the least a profile may set: no detailed 200 px image fits it
TIGHT = Preset("tight", 200, 200, max_bytes=BUDGET)
ROOMY = Preset("roomy", 64, 64, max_bytes=1024**2)
LAZY = Preset("later", 300, 300, formats=("jpeg",), max_bytes=BUDGET, lazy=True)


@pytest.fixture(scope="module")
def runner() -> Iterator[IsolatedRunner]:
    runner = IsolatedRunner(1, JobLimits(memory_bytes=512 * 1024**2, cpu_seconds=5))
    runner.warm_up()
    yield runner
    runner.close()


def _photo(width: int = 300, height: int = 200) -> bytes:
    """A JPEG with detail at every scale, so that its variants are never tiny."""
    detail = Image.effect_mandelbrot((width, height), (-2.0, -1.2, 0.8, 1.2), 100)
    across = Image.linear_gradient("L").resize((width, height))
    around = Image.radial_gradient("L").resize((width, height))
    buffer = io.BytesIO()
    Image.merge("RGB", (detail, across, around)).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


async def _rows(pool: asyncpg.Pool, sha256: str) -> dict[tuple[str, str], tuple[bool, int]]:
    rows = await pool.fetch(
        "SELECT name, format, over_budget, size_bytes FROM image_variants WHERE sha256 = $1",
        sha256,
    )
    return {(r["name"], r["format"]): (r["over_budget"], r["size_bytes"]) for r in rows}


def _logged(caplog: pytest.LogCaptureFixture) -> set[tuple[str, str, int]]:
    return {
        (r.preset, r.format, r.budget)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage().startswith("variant over its byte budget")
    }


async def test_an_upload_stores_its_over_budget_variants_marked(
    pool: asyncpg.Pool,
    store: S3ObjectStore,
    runner: IsolatedRunner,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await project(pool, TEAM, [TIGHT, ROOMY])
    with caplog.at_level(logging.WARNING):
        sha = await address(pool, await upload(pool, store, runner, TEAM, _photo()))

    rows = await _rows(pool, sha)
    assert set(rows) == {(p, f) for p in ("tight", "roomy") for f in ("webp", "jpeg")}
    for fmt in ("webp", "jpeg"):
        over, size = rows[("tight", fmt)]
        assert over and size > BUDGET, fmt
        roomy_over, roomy_size = rows[("roomy", fmt)]
        assert not roomy_over and roomy_size <= 1024**2, fmt
    assert _logged(caplog) == {("tight", "webp", BUDGET), ("tight", "jpeg", BUDGET)}
    stored = await store.head(variant_key(GLOBAL_SCOPE, sha, "tight", "jpeg", 1))
    assert stored is not None, "an over-budget variant is served all the same"


async def test_a_render_after_ingest_stores_its_over_budget_variant_marked(
    pool: asyncpg.Pool,
    store: S3ObjectStore,
    runner: IsolatedRunner,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await project(pool, TEAM, [ROOMY, LAZY])
    image_id = await upload(pool, store, runner, TEAM, _photo())
    sha = await address(pool, image_id)
    await ask_lazily(pool, image_id, "later")
    claimed = await PostgresRenderRequests(pool).claim(stale_after_seconds=300)
    assert claimed is not None

    with caplog.at_level(logging.WARNING):
        assert await render_variant(pool, store, runner)(claimed) is RenderOutcome.RENDERED

    over, size = (await _rows(pool, sha))[("later", "jpeg")]
    assert over and size > BUDGET
    assert _logged(caplog) == {("later", "jpeg", BUDGET)}
