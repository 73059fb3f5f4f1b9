-- imagery 0020: failed uploads can be tried again (`imagery-admin reprocess`).
-- An upload that failed for a reason that may not be the file's fault (CPU_LIMIT,
-- PROCESSING_TIMEOUT, MEMORY_LIMIT, RETRIES_EXHAUSTED) keeps its bytes under
-- `retained/{image_id}` until `retained_until` (RETAINED_FAILED_DAYS, set by the processor as
-- it marks the record FAILED); NULL: nothing is kept. `imagery-admin reprocess` refuses an
-- image whose copy is past it, and queues a `reprocess` job: the processor copies the bytes
-- back to `uploads/{image_id}`, so the normal S3 event processes the same record again.
ALTER TABLE image_records ADD COLUMN retained_until timestamptz NULL;

ALTER TABLE admin_jobs
    DROP CONSTRAINT admin_jobs_kind_check,
    ADD CONSTRAINT admin_jobs_kind_check
        CHECK (kind IN ('purge_project', 'backfill', 'reprocess'));
