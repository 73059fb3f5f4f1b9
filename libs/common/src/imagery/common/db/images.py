"""PostgresImageRepository: every SQL statement about image records, with `$n` parameters."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

import asyncpg

from imagery.common.db.pool import translates_postgres_errors
from imagery.common.db.usage import read_usage
from imagery.common.domain import (
    DeletedImage,
    DownloadTarget,
    ImageInsights,
    ImageRecord,
    ImageStatus,
    VariantInfo,
)
from imagery.common.errors import DependencyUnavailable, ImageAlreadyExists
from imagery.common.profiles import profile_from_json
from imagery.common.quotas import UNLIMITED, Quotas, refusal
from imagery.common.telemetry import current_trace_id, trace_id_of
from imagery.common.tenancy import ProjectSettings
from imagery.common.upload_limits import UploadLimits

_RECORD_COLUMNS = """r.id, r.status, r.content_type, r.file_name, r.object_key, r.size_bytes,
              r.width, r.height, COALESCE(r.digest, r.sha256) AS digest, r.detected_format,
              r.failure_reason, r.created_at, r.updated_at, r.trace_context, r.attempts,
              r.project_id, r.sha256, r.labels"""
# The variants an image serves: per name and format, the newest profile version's (a backfill
# adds a version's variants beside the older ones, which serve until then).
_VARIANTS = """(SELECT jsonb_agg(jsonb_build_object(
                   'name', v.name, 'format', v.format, 'content_type', v.content_type,
                   'width', v.width, 'height', v.height, 'size_bytes', v.size_bytes,
                   'key', v.object_key, 'profile_version', v.profile_version,
                   'over_budget', v.over_budget) ORDER BY v.name, v.format)
               FROM (SELECT DISTINCT ON (w.name, w.format) w.*
                       FROM image_variants w WHERE w.sha256 = r.sha256
                      ORDER BY w.name, w.format, w.profile_version DESC) v) AS variants,
              (SELECT b.profile_version FROM image_blobs b
                WHERE b.sha256 = r.sha256) AS profile_version,
              (SELECT jsonb_build_object(
                   'thumbhash', encode(b.thumbhash, 'base64'), 'blurhash', b.blurhash,
                   'average_color', b.average_color, 'dominant_colors', b.dominant_colors)
                 FROM image_blobs b
                WHERE b.sha256 = r.sha256 AND b.blurhash IS NOT NULL) AS insights"""
_COLUMNS = f"{_RECORD_COLUMNS}, {_VARIANTS}"
_SELECT = f"SELECT {_COLUMNS} FROM image_records r"


def select_records() -> str:
    """`SELECT <every record column and its variants> FROM image_records r`, for other
    modules' WHERE clauses (read with `record_from_row`)."""
    return _SELECT


# Delivery's hot path: an indexed join that returns, per image, only the requested preset in
# the acceptable formats (at most a couple of short rows), never the whole variant set.
_SELECT_DOWNLOAD_TARGETS = """
SELECT r.id, r.status, v.format, v.object_key, v.content_type, v.profile_version
  FROM image_records r
  LEFT JOIN image_variants v
         ON v.sha256 = r.sha256 AND r.status = 'ready'
        AND v.name = $2 AND v.format = ANY($3::text[])
 WHERE r.id = ANY($1::text[]) AND r.project_id = $4"""
# A record, its audit event, in one statement (one round trip on the hot path). The usage
# trigger (0013) counts it and, when `imagery.quotas` names the project's quotas (local to
# this statement's transaction), refuses it with SQLSTATE IQ001 if it takes the project past
# one: the project's usage row is locked only from there to the commit.
_INSERT = """
WITH saved AS (
    INSERT INTO image_records
           (id, status, content_type, file_name, object_key, size_bytes, trace_context,
            project_id, reserved_bytes, labels, upload_limits)
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $11, $12::jsonb, $13::jsonb {quotas}
    RETURNING id)
INSERT INTO audit_events (project_id, principal, action, target, trace_id, outcome)
SELECT $8, $9, 'image.create', 'images/' || id, $10, 'ok' FROM saved"""
_SAVE = _INSERT.format(quotas="")
_SAVE_WITHIN_QUOTAS = _INSERT.format(
    quotas="FROM (SELECT set_config('imagery.quotas', $14, true)) AS quotas"
)
_PAST_A_QUOTA = "IQ001"

# UpdateImage: the labels replaced and the change audited in one statement; the record is
# read back from the UPDATE itself (a later SELECT in the statement would see the old row).
# The 0015 trigger announces the change on the change bus when it commits.
_UPDATE_LABELS = f"""
WITH changed AS (
    UPDATE image_records SET labels = $3::jsonb, updated_at = now()
     WHERE id = $1 AND project_id = $2
    RETURNING *),
audited AS (
    INSERT INTO audit_events (project_id, principal, action, target, trace_id, outcome, details)
    SELECT $2, $4, 'image.update', 'images/' || id, $5, 'ok', $6::jsonb FROM changed)
SELECT {_COLUMNS} FROM changed r"""


# The record and its content reference in one statement, so the project's usage row (its
# trigger runs at the statement's end) is locked after the content's row, as the processor
# locks them when it marks an image READY: opposite orders would deadlock.
_DELETE = """
WITH gone AS (
    DELETE FROM image_records WHERE id = $1 AND project_id = $2
    RETURNING status, object_key, sha256),
ref AS (
    UPDATE image_blobs b SET reference_count = b.reference_count - 1, updated_at = now()
      FROM gone WHERE b.sha256 = gone.sha256)
SELECT status, object_key, sha256 FROM gone"""

# The deletion feed (0004) is still written for delivery replicas of the previous release,
# which read it; the change bus notice is what current replicas act on.
_DELETED = """
WITH feed AS (INSERT INTO image_deletions (image_id) VALUES ($1)),
     audited AS (INSERT INTO audit_events (project_id, principal, action, target, trace_id,
                                           outcome)
                 VALUES ($2, $3, 'image.delete', 'images/' || $1, $4, 'ok'))
SELECT pg_notify('imagery_changes', 'image:' || $1)"""


T = TypeVar("T")


class PostgresImageRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translates_postgres_errors
    async def save(
        self, record: ImageRecord, *, principal: str, quotas: Quotas = UNLIMITED
    ) -> None:
        """Insert a new record and its `image.create` audit event by `principal`; with
        `quotas`, only if the project's usage leaves room (else raise `QuotaExceeded`)."""
        await self.save_unless(record, principal=principal, quotas=quotas)

    @translates_postgres_errors
    async def save_unless(
        self,
        record: ImageRecord,
        *,
        principal: str,
        quotas: Quotas = UNLIMITED,
        taken: Callable[[asyncpg.pool.PoolConnectionProxy], Awaitable[T | None]] | None = None,
    ) -> T | None:
        """`save`, unless `taken`, run first on the same connection and in the same
        transaction, answers something: then nothing is inserted and that is returned. What
        `taken` writes (a request id's claim) commits with the record, or neither does."""
        values = (
            record.id,
            record.status.value,
            record.content_type,
            record.file_name,
            record.object_key,
            record.size_bytes,
            record.trace_context,
            record.project_id,
            principal,
            trace_id_of(record.trace_context),
            record.reserved_bytes,
            json.dumps(record.labels),
            None if record.upload_limits is None else json.dumps(record.upload_limits.to_json()),
        )
        limits = "|".join(
            map(str, (record.project_id, quotas.images, quotas.bytes, quotas.uploads_per_day))
        )
        statement, extra = (_SAVE, ()) if quotas.unlimited else (_SAVE_WITHIN_QUOTAS, (limits,))
        try:
            for _ in range(3):
                try:
                    if taken is None:
                        await self._pool.execute(statement, *values, *extra)
                        return None
                    async with self._pool.acquire() as conn, conn.transaction():
                        answer = await taken(conn)
                        if answer is None:
                            await conn.execute(statement, *values, *extra)
                        return answer
                except asyncpg.PostgresError as exc:
                    if exc.sqlstate != _PAST_A_QUOTA:
                        raise
                await self._refuse(record, quotas)
        except asyncpg.UniqueViolationError as exc:
            raise ImageAlreadyExists(f"Image {record.id} already exists.") from exc
        raise DependencyUnavailable(
            "The project's usage kept changing while this upload was admitted: retry the call."
        )

    async def _refuse(self, record: ImageRecord, quotas: Quotas) -> None:
        """Raise the quota the upload exceeds. Returns when none does now (an upload ended
        since the trigger refused it, or the project was purged in between)."""
        found = await read_usage(self._pool, [record.project_id])
        if not found:
            return
        refused = refusal(
            found[record.project_id], record.project_id, quotas, record.reserved_bytes
        )
        if refused is not None:
            raise refused

    @translates_postgres_errors
    async def find_by_id(self, project_id: str, image_id: str) -> ImageRecord | None:
        row = await self._pool.fetchrow(
            f"{_SELECT} WHERE r.id = $1 AND r.project_id = $2", image_id, project_id
        )
        return None if row is None else record_from_row(row)

    @translates_postgres_errors
    async def find_for_processing(self, image_id: str) -> ImageRecord | None:
        """Any project's record: the processor works for all of them."""
        row = await self._pool.fetchrow(f"{_SELECT} WHERE r.id = $1", image_id)
        return None if row is None else record_from_row(row)

    @translates_postgres_errors
    async def find_many(self, project_id: str, image_ids: Sequence[str]) -> list[ImageRecord]:
        """The project's records among `image_ids`, in no particular order."""
        rows = await self._pool.fetch(
            f"{_SELECT} WHERE r.id = ANY($1::text[]) AND r.project_id = $2",
            list(image_ids),
            project_id,
        )
        return [record_from_row(row) for row in rows]

    @translates_postgres_errors
    async def find_download_targets(
        self, project_id: str, image_ids: Sequence[str], preset: str, formats: Sequence[str]
    ) -> list[DownloadTarget]:
        rows = await self._pool.fetch(
            _SELECT_DOWNLOAD_TARGETS, list(image_ids), preset, list(formats), project_id
        )
        # per image, the newest profile version's variant (older ones serve until a backfill
        # or a lazy rendering replaces them), in the best format the caller accepts
        rank = {fmt: i for i, fmt in enumerate(formats)}
        best: dict[str, tuple[tuple[int, int], DownloadTarget]] = {}
        for image_id, status, fmt, key, content_type, version in rows:
            order = (-1, 0) if fmt is None else (version, -rank[fmt])
            known = best.get(image_id)
            if known is None or order > known[0]:
                target = DownloadTarget(image_id, _STATUSES[status], key, content_type, fmt)
                best[image_id] = (order, target)
        return [target for _, target in best.values()]

    @translates_postgres_errors
    async def delete(
        self, project_id: str, image_id: str, *, principal: str
    ) -> DeletedImage | None:
        """Remove the record and its reference in one transaction (waits for a processor
        finishing it), audited and announced on the change bus; the last reference leaves
        the content's row as a tombstone for the processor's collector. None when the
        project has no such image."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_DELETE, image_id, project_id)
            if row is None:
                return None
            await conn.execute(_DELETED, image_id, project_id, principal, current_trace_id())
        return DeletedImage(image_id, _STATUSES[row["status"]], row["object_key"], row["sha256"])

    @translates_postgres_errors
    async def update_labels(
        self, project_id: str, image_id: str, labels: Mapping[str, str], *, principal: str
    ) -> ImageRecord | None:
        """Replace the labels of the project's image (and move `updated_at`), audited as
        `principal`'s `image.update`; the record as it now is, or None when the project has
        no such image."""
        row = await self._pool.fetchrow(
            _UPDATE_LABELS,
            image_id,
            project_id,
            json.dumps(dict(labels)),
            principal,
            current_trace_id(),
            json.dumps({"update_mask": ["labels"]}),
        )
        return None if row is None else record_from_row(row)

    @translates_postgres_errors
    async def update_status(
        self,
        image_id: str,
        status: ImageStatus,
        *,
        size_bytes: int | None = None,
        failure_reason: str | None = None,
        only_from: Collection[ImageStatus] | None = None,
    ) -> bool:
        result = await self._pool.execute(
            """UPDATE image_records
                  SET status = $2, size_bytes = COALESCE($3, size_bytes),
                      failure_reason = $4, updated_at = now()
                WHERE id = $1 AND ($5::text[] IS NULL OR status = ANY($5::text[]))""",
            image_id,
            status.value,
            size_bytes,
            failure_reason,
            None if only_from is None else [s.value for s in only_from],
        )
        return bool(result.endswith(" 1"))

    @translates_postgres_errors
    async def claim_unfinished(
        self, *, idle_seconds: float, lease_seconds: float, limit: int = 100
    ) -> list[ImageRecord]:
        rows = await self._pool.fetch(
            f"""WITH due AS (
                    UPDATE image_records r SET swept_at = now()
                      FROM (SELECT i.id FROM image_records i
                             WHERE i.status IN ('pending', 'processing')
                               AND i.updated_at <= now() - make_interval(secs => $1)
                               -- an `imagery-admin reprocess` whose copy is still to come
                               AND NOT EXISTS (SELECT 1 FROM admin_jobs j
                                                WHERE j.kind = 'reprocess' AND j.target = i.id
                                                  AND j.state IN ('queued', 'running'))
                               AND (i.swept_at IS NULL
                                    OR i.swept_at <= now() - make_interval(secs => $3))
                             ORDER BY i.updated_at LIMIT $2
                               FOR UPDATE SKIP LOCKED) d
                     WHERE r.id = d.id
                 RETURNING r.*)
                SELECT {_COLUMNS} FROM due r ORDER BY r.updated_at""",
            idle_seconds,
            limit,
            lease_seconds,
        )
        return [record_from_row(row) for row in rows]

    @translates_postgres_errors
    async def claim_for_processing(
        self, image_id: str, *, stale_after_seconds: float
    ) -> ImageRecord | None:
        row = await self._pool.fetchrow(
            f"""WITH claimed AS (
                    UPDATE image_records
                       SET status = 'processing', updated_at = now(),
                           attempts = CASE WHEN status = 'processing'
                                           THEN GREATEST(attempts - 1, 0) ELSE attempts END
                     WHERE id = $1
                       AND (status = 'pending'
                            OR (status = 'processing'
                                AND updated_at <= now() - make_interval(secs => $2)))
                 RETURNING *)
                SELECT {_COLUMNS}, p.content_scope, p.settings AS project_settings,
                       p.variant_profile AS project_profile, r.upload_limits
                  FROM claimed r JOIN projects p ON p.id = r.project_id""",
            image_id,
            stale_after_seconds,
        )
        return None if row is None else record_from_row(row)


_STATUSES = {s.value: s for s in ImageStatus}


def record_from_row(row: asyncpg.Record) -> ImageRecord:
    return ImageRecord(
        id=row["id"],
        status=ImageStatus(row["status"]),
        content_type=row["content_type"],
        file_name=row["file_name"],
        object_key=row["object_key"],
        size_bytes=row["size_bytes"],
        width=row["width"],
        height=row["height"],
        sha256=row["digest"],
        detected_format=row["detected_format"],
        failure_reason=row["failure_reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        variants=_variants(row["variants"]),
        trace_context=row["trace_context"],
        attempts=row["attempts"],
        project_id=row["project_id"],
        content=row["sha256"],
        labels=_json(row["labels"]) or {},
        profile_version=row["profile_version"] or 0,
        insights=_insights(row["insights"]),
        **_project_columns(row),
    )


def _project_columns(row: asyncpg.Record) -> dict[str, Any]:
    """What a claim adds for the processor: the project's content scope and settings, and
    the limits the upload asked for."""
    if "content_scope" not in row:
        return {}
    raw = row["project_settings"]
    settings = json.loads(raw) if isinstance(raw, str) else raw
    return {
        "content_scope": row["content_scope"],
        "project_settings": ProjectSettings.from_json(settings),
        "project_profile": profile_from_json(row["project_profile"]),
        "upload_limits": UploadLimits.from_json(_json(row["upload_limits"])),
    }


def _json(raw: Any) -> Any:
    return json.loads(raw) if isinstance(raw, str) else raw


def _insights(raw: Any) -> ImageInsights | None:
    if raw is None:
        return None
    found = _json(raw)
    return ImageInsights(
        thumbhash=base64.b64decode(found["thumbhash"] or ""),
        blurhash=found["blurhash"],
        average_color=found["average_color"] or "",
        dominant_colors=tuple(
            (item["color"], float(item["fraction"])) for item in found["dominant_colors"] or ()
        ),
    )


def _variants(raw: Any) -> tuple[VariantInfo, ...]:
    if raw is None:
        return ()
    return tuple(VariantInfo(**item) for item in _json(raw))
