"""`imagery-admin similar`'s query on a table of realistic size: the plan uses the band indexes
of migration 0023 (index scans within the project), never a sequential scan, and the answer
holds exactly the project's images within the distance that share a band."""

from __future__ import annotations

import json
import random
from typing import Any

import asyncpg

from imagery.admin.similar import SIMILAR
from tests.integration.test_admin_cli import admin

ROWS = 60_000
MASK = (1 << 64) - 1

# Ids look like ULIDs made over time (an increasing prefix, then hex, a subset of Crockford
# base32); each record a random pHash, every other one in project "other".
_SEED = """
INSERT INTO image_records
       (id, status, content_type, file_name, object_key, project_id, phash)
SELECT id, 'ready', 'image/jpeg', 'seeded.jpg', 'uploads/' || id,
       CASE WHEN i % 2 = 0 THEN 'default' ELSE 'other' END,
       (random() * 9223372036854775807)::bigint * CASE WHEN i % 3 = 0 THEN -1 ELSE 1 END
  FROM (SELECT i, '01' || lpad(upper(to_hex(i)), 8, '0')
                    || upper(substr(md5(i::text), 1, 16)) AS id
          FROM generate_series(0, $1 - 1) i) r"""
_INSERT = """
INSERT INTO image_records (id, status, content_type, file_name, object_key, project_id, phash)
VALUES ($1, 'ready', 'image/jpeg', $1 || '.jpg', 'uploads/' || $1, $2, $3)"""


def _signed(value: int) -> int:
    value &= MASK
    return value - (1 << 64) if value >= 1 << 63 else value


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(n for child in plan.get("Plans", []) for n in _nodes(child))]


def _image_id(n: int) -> str:
    return f"01ZZZZZZZZ{n:016X}"


async def test_similar_uses_the_band_indexes_and_finds_what_shares_a_band(
    pool: asyncpg.Pool, database_url: str
) -> None:
    await pool.execute(
        "INSERT INTO projects (id, display_name, content_scope) VALUES ('other', 'O', 'o')"
    )
    await pool.execute(_SEED, ROWS)
    target = random.Random(7).getrandbits(64)
    flips = {
        1: 1 << 5,  # one bit: band 3 changes, bands 0-2 match
        2: (1 << 5) | (1 << 20) | (1 << 37),  # three bands change, band 0 matches
        3: (1 << 5) | (1 << 20) | (1 << 37) | (1 << 60),  # 4 bits, one per band: not findable
        4: (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 6),  # 5 bits, all in band 3
    }
    await pool.execute(_INSERT, _image_id(0), "default", _signed(target))
    for n, flip in flips.items():
        await pool.execute(_INSERT, _image_id(n), "default", _signed(target ^ flip))
    # the same near hash in another project is never an answer
    await pool.execute(_INSERT, _image_id(9), "other", _signed(target ^ 1))
    await pool.execute("ANALYZE image_records")

    args = ("default", _signed(target), _image_id(0), 8, 20)
    raw = await pool.fetchval(f"EXPLAIN (FORMAT JSON) {SIMILAR}", *args)
    nodes = _nodes(json.loads(raw)[0]["Plan"])
    kinds = {n["Node Type"] for n in nodes}
    assert "Seq Scan" not in kinds, kinds
    used = {n.get("Index Name") for n in nodes if "Index" in n["Node Type"]}
    assert used == {f"image_records_phash_band{b}_idx" for b in range(4)}, used

    run = await admin("similar", _image_id(0), "--json", database_url=database_url)
    assert run.code == 0, run.err
    found = {s["image_id"]: s["distance"] for s in json.loads(run.out)["similar"]}
    # 4 bits spread over the four bands share no band: beyond what 8 bits can promise
    assert found == {_image_id(1): 1, _image_id(2): 3, _image_id(4): 5}, found
    near = await admin("similar", _image_id(0), "--max-distance", "2", database_url=database_url)
    assert near.code == 0 and _image_id(1) in near.out and _image_id(2) not in near.out, near.out
