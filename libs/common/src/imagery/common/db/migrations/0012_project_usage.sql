-- imagery 0012: what each project stores, for its quotas.
-- Every writer of image_records (CreateUploadUrl, the processor, DeleteImage, the purge job,
-- and any later one) changes what a project stores, so the count is kept by triggers, in the
-- writer's own transaction, rather than by each writer remembering to.
-- An image counts from its creation until it is deleted or ends FAILED. While it is pending
-- or processing it counts `reserved_bytes` (the declared size, else the project's maximum);
-- once READY it counts its verified size. Deduplicated images count in full.
-- `day`/`day_uploads` count the uploads started on one UTC day; the row is a project's single
-- admission point (CreateUploadUrl locks it), so all three quotas are checked on one row.
ALTER TABLE image_records ADD COLUMN reserved_bytes bigint NOT NULL DEFAULT 0
    CHECK (reserved_bytes >= 0);

CREATE TABLE project_usage (
    project_id  text COLLATE "C" PRIMARY KEY REFERENCES projects (id) ON DELETE CASCADE,
    images      bigint NOT NULL DEFAULT 0,
    bytes       bigint NOT NULL DEFAULT 0,
    day         date   NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')::date,
    day_uploads bigint NOT NULL DEFAULT 0
);

CREATE FUNCTION image_charge(status text, reserved bigint, size bigint) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE status WHEN 'ready' THEN COALESCE(size, 0) WHEN 'failed' THEN 0
                       ELSE reserved END $$;

-- Statement-level, over transition tables: a purge batch of 1,000 rows is one usage update.
CREATE FUNCTION project_usage_follow() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    today date := (now() AT TIME ZONE 'UTC')::date;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO project_usage AS u (project_id, images, bytes, day, day_uploads)
        SELECT project_id, count(*) FILTER (WHERE status <> 'failed'),
               sum(image_charge(status, reserved_bytes, size_bytes)), today, count(*)
          FROM new_rows GROUP BY project_id
        ON CONFLICT (project_id) DO UPDATE
           SET images = u.images + EXCLUDED.images,
               bytes = u.bytes + EXCLUDED.bytes,
               day_uploads = CASE WHEN u.day = EXCLUDED.day
                                  THEN u.day_uploads + EXCLUDED.day_uploads
                                  ELSE EXCLUDED.day_uploads END,
               day = EXCLUDED.day;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE project_usage u
           SET images = u.images - d.images, bytes = u.bytes - d.bytes
          FROM (SELECT project_id, count(*) FILTER (WHERE status <> 'failed') AS images,
                       sum(image_charge(status, reserved_bytes, size_bytes)) AS bytes
                  FROM old_rows GROUP BY project_id) d
         WHERE u.project_id = d.project_id AND (d.images <> 0 OR d.bytes <> 0);
    ELSE
        UPDATE project_usage u
           SET images = u.images + d.images, bytes = u.bytes + d.bytes
          FROM (SELECT project_id, sum(images) AS images, sum(bytes) AS bytes
                  FROM (SELECT project_id, (status <> 'failed')::int AS images,
                               image_charge(status, reserved_bytes, size_bytes) AS bytes
                          FROM new_rows
                        UNION ALL
                        SELECT project_id, -(status <> 'failed')::int,
                               -image_charge(status, reserved_bytes, size_bytes)
                          FROM old_rows) c
                 GROUP BY project_id) d
         WHERE u.project_id = d.project_id AND (d.images <> 0 OR d.bytes <> 0);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER project_usage_on_insert AFTER INSERT ON image_records
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION project_usage_follow();
CREATE TRIGGER project_usage_on_update AFTER UPDATE ON image_records
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION project_usage_follow();
CREATE TRIGGER project_usage_on_delete AFTER DELETE ON image_records
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION project_usage_follow();

-- What is stored now. The triggers above hold the table's SHARE ROW EXCLUSIVE lock until this
-- transaction commits, so no write slips between the count and the triggers (reads go on).
INSERT INTO project_usage (project_id, images, bytes, day, day_uploads)
SELECT p.id,
       count(r.id) FILTER (WHERE r.status <> 'failed'),
       COALESCE(sum(image_charge(r.status, r.reserved_bytes, r.size_bytes)), 0),
       (now() AT TIME ZONE 'UTC')::date,
       count(r.id) FILTER (WHERE r.created_at >= (now() AT TIME ZONE 'UTC')::date
                                                 AT TIME ZONE 'UTC')
  FROM projects p LEFT JOIN image_records r ON r.project_id = p.id
 GROUP BY p.id;
