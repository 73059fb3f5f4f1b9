-- imagery:no-transaction
-- imagery 0028: the BLOCKED images of some bytes, found by the bytes' SHA-256 (`digest`),
-- for `imagery-admin unblock` (how many stay blocked) without a scan of image_records. Only
-- BLOCKED rows are in it. Built without blocking writes; an INVALID leftover of a build cut
-- short is dropped and built again.
DROP INDEX CONCURRENTLY IF EXISTS image_records_blocked_digest_idx;
CREATE INDEX CONCURRENTLY image_records_blocked_digest_idx
    ON image_records (digest) WHERE status = 'blocked';
