"""`imagery-admin similar IMAGE_ID`: the READY images of the image's project whose perceptual
hash (pHash, 64 bits, computed by the processor at ingest) is within a Hamming distance.

Read-only, straight against Postgres. Each READY record carries its content's pHash
(`image_records.phash`, migration 0023), and four expression indexes on (project_id, one
16-bit band of the hash) find the records that share a band with it: index scans within one
project, never a scan of the table. `bit_count` then checks the real distance. By the
pigeonhole principle two hashes that differ in at most 3 bits share at least one band
exactly, so every image within 3 bits is found; farther ones only when a band matches.
"""

from __future__ import annotations

from argparse import Namespace
from typing import Any

import asyncpg

from imagery.admin import direct
from imagery.admin.output import CliError, emit, iso, table, when

Plain = dict[str, Any]
BANDS = 4
GUARANTEED_DISTANCE = BANDS - 1  # at most 3 differing bits leave one of four bands intact

_TARGET = "SELECT project_id, status, phash FROM image_records WHERE id = $1"

# $1 project, $2 the image's pHash, $3 the image, $4 the largest distance, $5 the limit. The
# band expressions are those of the 0023 indexes, written identically so the planner uses them.
SIMILAR = """
SELECT id, file_name, created_at, bit_count((phash # $2::bigint)::bit(64)) AS distance
  FROM image_records
 WHERE project_id = $1 AND phash IS NOT NULL AND status = 'ready' AND id <> $3
   AND (((phash >> 48) & 65535) = (($2::bigint >> 48) & 65535)
     OR ((phash >> 32) & 65535) = (($2::bigint >> 32) & 65535)
     OR ((phash >> 16) & 65535) = (($2::bigint >> 16) & 65535)
     OR (phash & 65535) = ($2::bigint & 65535))
   AND bit_count((phash # $2::bigint)::bit(64)) <= $4
 ORDER BY distance, id
 LIMIT $5"""


async def find_similar(dsn: str, image_id: str, max_distance: int, limit: int) -> Plain:
    conn = await asyncpg.connect(dsn)
    try:
        target = await conn.fetchrow(_TARGET, image_id)
        if target is None:
            raise CliError(f"No image {image_id}: check the id (any project's image will do).")
        if target["status"] != "ready" or target["phash"] is None:
            raise CliError(
                f"images/{image_id} has no perceptual hash ({target['status']}; images made "
                "before imagery computed one have none): pick a READY image uploaded since."
            )
        rows = await conn.fetch(
            SIMILAR, target["project_id"], target["phash"], image_id, max_distance, limit
        )
    finally:
        await conn.close()
    return {
        "image_id": image_id,
        "project_id": target["project_id"],
        "phash": f"{target['phash'] & ((1 << 64) - 1):016x}",
        "max_distance": max_distance,
        "similar": [
            {
                "image_id": r["id"],
                "distance": r["distance"],
                "file_name": r["file_name"],
                "create_time": iso(r["created_at"]),
            }
            for r in rows
        ],
    }


def similar(args: Namespace, dsn: str) -> None:
    data = direct.run(lambda: find_similar(dsn, args.image_id, args.max_distance, args.limit))
    emit(args.json, data, lambda: _text(data))


def _text(data: Plain) -> str:
    head = (
        f"images/{data['image_id']} (projects/{data['project_id']}, pHash {data['phash']}): "
        f"{len(data['similar'])} image(s) within {data['max_distance']} bits"
    )
    if not data["similar"]:
        return head + "."
    rows = [
        (s["image_id"], s["distance"], s["file_name"], when(s["create_time"]))
        for s in data["similar"]
    ]
    return head + ":\n" + table(["IMAGE", "DISTANCE", "FILE NAME", "CREATED"], rows)
