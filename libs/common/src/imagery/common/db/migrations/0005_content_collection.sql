-- imagery 0005: content is written and collected without holding a transaction across S3.
-- A blob row now exists before its objects are written (reserved, stored_at NULL) and after
-- its last reference went (a tombstone: reference_count 0). A collector claims a row that has
-- had no reference for a grace period (collecting_since), deletes its objects outside any
-- transaction, then deletes the row. Nothing links to, reserves or revives a row while it is
-- being collected.
ALTER TABLE image_blobs
    ADD COLUMN stored_at        timestamptz NULL,
    ADD COLUMN collecting_since timestamptz NULL;

-- Every existing blob's objects were written in the transaction that created it.
UPDATE image_blobs SET stored_at = created_at;
