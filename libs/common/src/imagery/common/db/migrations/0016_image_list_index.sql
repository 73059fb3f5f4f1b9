-- imagery:no-transaction
-- imagery 0016: ListImages pages a project's images newest first (create_time desc, then
-- image_id) by keyset, so each page is one index range scan. Built without blocking writes;
-- an INVALID leftover of a build cut short is dropped and built again.
DROP INDEX CONCURRENTLY IF EXISTS image_records_project_created_idx;
CREATE INDEX CONCURRENTLY image_records_project_created_idx
    ON image_records (project_id, created_at DESC, id);
