-- imagery 0027: takedown (issue 19). `imagery-admin block` records the bytes' SHA-256 in
-- blocked_content: every READY image of those bytes, in every project, turns BLOCKED (its
-- content unlinked and deleted, the CDN invalidated by a 'takedown' operator job), and an
-- upload of those bytes ends FAILED with BLOCKED. `imagery-admin unblock` deletes the row.
-- Content addresses are scoped per project, so the SHA-256 of the bytes (image_records.digest)
-- is what is blocked, never an address.
CREATE TABLE blocked_content (
    sha256     text        COLLATE "C" PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    reason     text        NOT NULL CHECK (char_length(reason) BETWEEN 1 AND 1000),
    blocked_by text        NOT NULL,
    blocked_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON blocked_content FROM PUBLIC;

-- BLOCKED: a status of its own, with BLOCKED as its failure_reason. NOT VALID: every row
-- written from now on is checked, and no existing row can break the wider rules, so the
-- table is not scanned under the ALTER's lock.
ALTER TABLE image_records
    DROP CONSTRAINT image_records_status_check,
    ADD CONSTRAINT image_records_status_check
        CHECK (status IN ('pending', 'processing', 'ready', 'failed', 'blocked')) NOT VALID,
    DROP CONSTRAINT failed_has_reason,
    ADD CONSTRAINT failed_has_reason
        CHECK ((status IN ('failed', 'blocked')) = (failure_reason IS NOT NULL)) NOT VALID;

-- A BLOCKED image keeps no content, so it counts no bytes (it still counts as an image until
-- its owner deletes it).
CREATE OR REPLACE FUNCTION image_charge(status text, reserved bigint, size bigint) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE status WHEN 'ready' THEN COALESCE(size, 0) WHEN 'failed' THEN 0
                       WHEN 'blocked' THEN 0 ELSE reserved END $$;

ALTER TABLE admin_jobs
    DROP CONSTRAINT admin_jobs_kind_check,
    ADD CONSTRAINT admin_jobs_kind_check
        CHECK (kind IN ('purge_project', 'backfill', 'reprocess', 'reconcile', 'takedown'));

-- The content addresses bytes may have in any project (tenancy.content_address: the plain
-- SHA-256 in the empty scope, else a hash of scope and SHA-256), deleted projects included.
CREATE FUNCTION content_addresses(sha256 text) RETURNS text[]
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT array_agg(DISTINCT address) FROM (
        SELECT sha256 AS address
        UNION ALL
        SELECT encode(pg_catalog.sha256(convert_to(p.content_scope || ':' || sha256, 'UTF8')),
                      'hex')
          FROM public.projects p WHERE p.content_scope <> '') a $$;
REVOKE ALL ON FUNCTION content_addresses(text) FROM PUBLIC;
