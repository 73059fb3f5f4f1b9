-- imagery 0022: `imagery-admin reconcile` (issue 18), the processor's reconciler of the bucket
-- against the database run once as an operator job (kind 'reconcile', target 'bucket': one
-- unfinished at a time, by the 0011 index). `options` is what the operator asked for
-- ({"dry_run": bool, "remove_orphans": bool}); `result` what the run found and did (a count
-- and a few examples of each finding), which the command prints. `total` and `done_count`
-- count the stored content the run checks.
ALTER TABLE admin_jobs
    DROP CONSTRAINT admin_jobs_kind_check,
    ADD CONSTRAINT admin_jobs_kind_check
        CHECK (kind IN ('purge_project', 'backfill', 'reprocess', 'reconcile')),
    ADD COLUMN options jsonb NULL,
    ADD COLUMN result jsonb NULL;
