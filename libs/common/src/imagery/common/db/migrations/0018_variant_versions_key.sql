-- imagery:no-transaction
-- imagery 0018: a content may hold the variants of two profile versions while a backfill
-- replaces one with the other, so the version joins image_variants' primary key. The unique
-- index is built without blocking writes, then becomes the key (a catalog change). Run again
-- after any failure, it ends in the same state.
DROP INDEX CONCURRENTLY IF EXISTS image_variants_version_key;
CREATE UNIQUE INDEX CONCURRENTLY image_variants_version_key
    ON image_variants (sha256, profile_version, name, format);
ALTER TABLE image_variants
    DROP CONSTRAINT image_variants_pkey,
    ADD CONSTRAINT image_variants_pkey PRIMARY KEY USING INDEX image_variants_version_key;
