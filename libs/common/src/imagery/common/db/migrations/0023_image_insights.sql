-- imagery:no-transaction
-- imagery 0023: placeholders, colours and a perceptual hash of each content (issue 19),
-- computed by the processor's job at ingest and kept with the blob, so identical bytes (one
-- blob) get identical values. NULL for content stored before: nothing is rewritten (nullable
-- columns without a default are a catalog change only).
-- The pHash is copied onto each READY record, which carries the project: near-duplicate
-- search is then index scans within one project. Four expression indexes, one per 16-bit band
-- of the hash, find every record sharing a band (by the pigeonhole principle, any hash within
-- 3 bits shares at least one band exactly); `bit_count((a # b)::bit(64))` then checks the
-- distance. Expressions rather than stored band columns: no write has to keep them in step,
-- and adding a stored generated column would rewrite the table. Built without blocking
-- writes; an INVALID leftover of a build cut short is dropped and built again.
ALTER TABLE image_blobs
    ADD COLUMN IF NOT EXISTS thumbhash bytea NULL,
    ADD COLUMN IF NOT EXISTS blurhash text NULL,
    ADD COLUMN IF NOT EXISTS average_color text NULL,
    ADD COLUMN IF NOT EXISTS dominant_colors jsonb NULL,
    ADD COLUMN IF NOT EXISTS phash bigint NULL;
ALTER TABLE image_records ADD COLUMN IF NOT EXISTS phash bigint NULL;
DROP INDEX CONCURRENTLY IF EXISTS image_records_phash_band0_idx;
CREATE INDEX CONCURRENTLY image_records_phash_band0_idx
    ON image_records (project_id, ((phash >> 48) & 65535)) WHERE phash IS NOT NULL;
DROP INDEX CONCURRENTLY IF EXISTS image_records_phash_band1_idx;
CREATE INDEX CONCURRENTLY image_records_phash_band1_idx
    ON image_records (project_id, ((phash >> 32) & 65535)) WHERE phash IS NOT NULL;
DROP INDEX CONCURRENTLY IF EXISTS image_records_phash_band2_idx;
CREATE INDEX CONCURRENTLY image_records_phash_band2_idx
    ON image_records (project_id, ((phash >> 16) & 65535)) WHERE phash IS NOT NULL;
DROP INDEX CONCURRENTLY IF EXISTS image_records_phash_band3_idx;
CREATE INDEX CONCURRENTLY image_records_phash_band3_idx
    ON image_records (project_id, (phash & 65535)) WHERE phash IS NOT NULL;
