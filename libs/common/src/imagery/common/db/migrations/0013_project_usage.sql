-- imagery 0013: what each project stores, for its quotas.
-- Every writer of image_records (CreateUploadUrl, the processor, DeleteImage, the purge job,
-- and any later one) changes what a project stores, so the count is kept by triggers, in the
-- writer's own transaction, rather than by each writer remembering to.
-- An image counts from its creation until it is deleted or ends FAILED. While it is pending
-- or processing it counts `reserved_bytes`; once READY it counts its verified size.
-- Deduplicated images count in full. `day`/`day_uploads` count the uploads started on one
-- UTC day. Quotas are checked where the upload is counted: CreateUploadUrl names its
-- project's quotas in `imagery.quotas` (a setting local to its transaction, "project|images|
-- bytes|uploads per day", 0: unlimited), and the INSERT trigger, having added the upload to
-- the project's row, refuses it (SQLSTATE IQ001) if that row is now past a quota. The row is
-- locked from that update to the commit, and each upload is added to the row as the previous
-- one left it, so concurrent uploads are admitted one at a time, never past a quota.
-- The functions run as their owner (the migrating role): the services' roles need no
-- privilege on project_usage to write images, and upload only reads it (docs/deploy.md).
-- They name every table by its schema instead of `SET search_path`, which costs each call a
-- configuration save and restore (measured: a quarter of an INSERT's time); the services'
-- roles can create nothing that would be found first (no CREATE on public, no TEMP).

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
    LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    today date := (now() AT TIME ZONE 'UTC')::date;
    quotas text[] := string_to_array(current_setting('imagery.quotas', true), '|');
    counted public.project_usage;
BEGIN
    IF TG_OP = 'INSERT' THEN
        FOR counted IN
        INSERT INTO public.project_usage AS u (project_id, images, bytes, day, day_uploads)
        SELECT project_id, count(*) FILTER (WHERE status <> 'failed'),
               sum(public.image_charge(status, reserved_bytes, size_bytes)), today, count(*)
          FROM new_rows GROUP BY project_id
        ON CONFLICT (project_id) DO UPDATE
           SET images = u.images + EXCLUDED.images,
               bytes = u.bytes + EXCLUDED.bytes,
               day_uploads = CASE WHEN EXCLUDED.day = u.day
                                  THEN u.day_uploads + EXCLUDED.day_uploads
                                  WHEN EXCLUDED.day > u.day THEN EXCLUDED.day_uploads
                                  ELSE u.day_uploads END,
               day = GREATEST(u.day, EXCLUDED.day)
        RETURNING u.*
        LOOP
            IF counted.project_id = quotas[1] AND (
                   (quotas[2]::bigint > 0 AND counted.images > quotas[2]::bigint)
                OR (quotas[3]::bigint > 0 AND counted.bytes > quotas[3]::bigint)
                OR (quotas[4]::bigint > 0 AND counted.day = today
                    AND counted.day_uploads > quotas[4]::bigint)) THEN
                RAISE EXCEPTION 'project % is past a quota', counted.project_id
                    USING ERRCODE = 'IQ001';
            END IF;
        END LOOP;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE public.project_usage u
           SET images = u.images - d.images, bytes = u.bytes - d.bytes
          FROM (SELECT project_id, count(*) FILTER (WHERE status <> 'failed') AS images,
                       sum(public.image_charge(status, reserved_bytes, size_bytes)) AS bytes
                  FROM old_rows GROUP BY project_id) d
         WHERE u.project_id = d.project_id AND (d.images <> 0 OR d.bytes <> 0);
    ELSE
        UPDATE public.project_usage u
           SET images = u.images + d.images, bytes = u.bytes + d.bytes
          FROM (SELECT project_id, sum(images) AS images, sum(bytes) AS bytes
                  FROM (SELECT project_id, (status <> 'failed')::int AS images,
                               public.image_charge(status, reserved_bytes, size_bytes) AS bytes
                          FROM new_rows
                        UNION ALL
                        SELECT project_id, -(status <> 'failed')::int,
                               -public.image_charge(status, reserved_bytes, size_bytes)
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
