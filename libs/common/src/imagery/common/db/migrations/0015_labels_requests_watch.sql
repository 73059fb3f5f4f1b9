-- imagery 0015: what issue 16's API adds to the schema.
-- upload_requests comes first: its foreign key waits for a lock on `projects`, and that wait
-- must not happen while the ALTER below holds image_records exclusively.

-- Request ids (AIP-155): a CreateUploadUrl retried with the same request_id within 24 hours
-- answers the image the first call created. `fingerprint` is a hash of the other fields, so
-- a reused id with a different request is told apart. Rows older than 24 hours mean nothing
-- and are pruned; `created_at` orders that.
CREATE TABLE upload_requests (
    project_id  text        NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    request_id  text        NOT NULL,
    fingerprint text        NOT NULL,
    image_id    text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, request_id)
);
CREATE INDEX upload_requests_created_at_idx ON upload_requests (created_at);
REVOKE ALL ON upload_requests FROM PUBLIC;

-- Labels: a caller's key/value map per image (validated in code), set at CreateUploadUrl and
-- changed with UpdateImage. A constant default is kept in the catalog, so no row is written.
ALTER TABLE image_records ADD COLUMN labels jsonb NOT NULL DEFAULT '{}';

-- WatchImage: every change to what GetImage shows of an image is announced on the change bus
-- as `state:<id>` when its transaction commits, whoever made it (processor, UpdateImage,
-- sweep). Deletions are announced as `image:<id>` by the deleting statement, as before.
CREATE FUNCTION image_state_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_catalog.pg_notify('imagery_changes', 'state:' || NEW.id);
    RETURN NULL;
END
$$;
CREATE TRIGGER image_records_state_notify
    AFTER UPDATE ON image_records
    FOR EACH ROW
    WHEN ((OLD.status, OLD.labels, OLD.failure_reason, OLD.sha256)
          IS DISTINCT FROM (NEW.status, NEW.labels, NEW.failure_reason, NEW.sha256))
    EXECUTE FUNCTION image_state_notify();
