-- imagery 0006: every record counts the jobs started for it, so a file that keeps failing in a
-- way nobody recognised ends FAILED (RETRIES_EXHAUSTED) instead of going round forever. A job
-- lost with its whole processor (a stale claim taken over) does not count against the file.
ALTER TABLE image_records ADD COLUMN attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0);
