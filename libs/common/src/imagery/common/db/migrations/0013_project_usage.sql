-- imagery 0013: what each project stores, for its quotas.
-- Every writer of image_records (CreateUploadUrl, the processor, DeleteImage, the purge job,
-- and any later one) changes what a project stores, so the count is kept by triggers, in the
-- writer's own transaction, rather than by each writer remembering to.
-- An image counts from its creation until it is deleted or ends FAILED. While it is pending
-- or processing it counts `reserved_bytes`; once READY it counts its verified size.
-- Deduplicated images count in full. `day`/`day_uploads` count the uploads started on one
-- UTC day. The row is a project's single admission point (`admit_upload` locks it), so all
-- three quotas are checked on one row, one upload after another.
-- The functions run as their owner (the migrating role): the services' roles need no
-- privilege on project_usage to write images, and upload only reads it (docs/deploy.md).

-- Reads and writes go on while the CHECK of 0012 is validated (SHARE UPDATE EXCLUSIVE).
ALTER TABLE image_records VALIDATE CONSTRAINT image_records_reserved_bytes_check;

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
-- An upload whose transaction began on an earlier UTC day than the row's counts for no day.
CREATE FUNCTION project_usage_follow() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
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
               day_uploads = CASE WHEN EXCLUDED.day = u.day
                                  THEN u.day_uploads + EXCLUDED.day_uploads
                                  WHEN EXCLUDED.day > u.day THEN EXCLUDED.day_uploads
                                  ELSE u.day_uploads END,
               day = GREATEST(u.day, EXCLUDED.day);
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

-- Whether one more upload of `reserve` bytes fits the quotas (0: unlimited). The usage row
-- is locked until the caller's transaction ends, and read as the previous holder left it,
-- so concurrent uploads are admitted one at a time, never past a quota. Called from the
-- INSERT of the upload's record, whose trigger then counts it.
CREATE FUNCTION admit_upload(project text, reserve bigint, max_images bigint,
                             max_bytes bigint, max_day_uploads bigint) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public AS $$
DECLARE
    today date := (now() AT TIME ZONE 'UTC')::date;
    u project_usage;
BEGIN
    SELECT * INTO u FROM project_usage WHERE project_id = project FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO project_usage (project_id) VALUES (project) ON CONFLICT DO NOTHING;
        SELECT * INTO u FROM project_usage WHERE project_id = project FOR UPDATE;
    END IF;
    RETURN (max_images = 0 OR u.images < max_images)
       AND (max_bytes = 0 OR u.bytes + reserve <= max_bytes)
       AND (max_day_uploads = 0 OR u.day < today OR u.day_uploads < max_day_uploads);
END $$;

CREATE TRIGGER project_usage_on_insert AFTER INSERT ON image_records
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION project_usage_follow();
CREATE TRIGGER project_usage_on_update AFTER UPDATE ON image_records
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION project_usage_follow();
CREATE TRIGGER project_usage_on_delete AFTER DELETE ON image_records
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION project_usage_follow();

-- What is stored now. The triggers hold the table's SHARE ROW EXCLUSIVE lock until this
-- transaction commits, so no write slips between the count and the triggers; writes wait
-- for the count (about a second per million images), reads go on.
INSERT INTO project_usage (project_id, images, bytes, day, day_uploads)
SELECT p.id,
       count(r.id) FILTER (WHERE r.status <> 'failed'),
       COALESCE(sum(image_charge(r.status, r.reserved_bytes, r.size_bytes)), 0),
       (now() AT TIME ZONE 'UTC')::date,
       count(r.id) FILTER (WHERE r.created_at >= (now() AT TIME ZONE 'UTC')::date
                                                 AT TIME ZONE 'UTC')
  FROM projects p LEFT JOIN image_records r ON r.project_id = p.id
 GROUP BY p.id;
