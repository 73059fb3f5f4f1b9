-- imagery:no-transaction
-- imagery 0021: retention (issue 18). The processor's housekeeping deletes rows past their
-- retention in small batches, each found through an index on its age, so a batch never
-- scans a table. audit_events (audit_events_at_idx) and image_deletions
-- (image_deletions_deleted_at_idx) have theirs already; FAILED records and finished operator
-- jobs get partial ones, which hold only the rows that can ever be pruned: a FAILED record
-- is found by when it last changed, a finished job by when it finished. The FAILED index's
-- size estimate (pg_class.reltuples) is also the `failed_images` row count of the
-- `imagery.table.rows` metric. Built without blocking writes; an INVALID leftover of a build
-- cut short is dropped and built again.
DROP INDEX CONCURRENTLY IF EXISTS image_records_failed_idx;
CREATE INDEX CONCURRENTLY image_records_failed_idx
    ON image_records (updated_at) WHERE status = 'failed';
DROP INDEX CONCURRENTLY IF EXISTS admin_jobs_finished_idx;
CREATE INDEX CONCURRENTLY admin_jobs_finished_idx
    ON admin_jobs (finished_at) WHERE state IN ('done', 'failed');
