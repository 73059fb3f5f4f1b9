-- imagery:no-transaction
-- imagery 0010: the indexes of per-project lookups lead with the project, built without
-- blocking writes; the constraints 0009 added NOT VALID are checked without blocking them.
-- Each statement is safe to run again after a failure part way: a CREATE INDEX CONCURRENTLY
-- cut short (a lock timeout behind a long transaction) leaves an INVALID index, which the
-- next run drops and builds again instead of skipping.
DROP INDEX CONCURRENTLY IF EXISTS image_records_project_id_idx;
CREATE INDEX CONCURRENTLY image_records_project_id_idx ON image_records (project_id, id);
ALTER TABLE image_records VALIDATE CONSTRAINT image_records_project_id_fkey;
ALTER TABLE image_records VALIDATE CONSTRAINT image_records_digest_check;
