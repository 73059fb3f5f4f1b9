-- imagery 0007: the processor's sweep of unfinished uploads takes its rows with FOR UPDATE SKIP
-- LOCKED and marks them swept, so several pods share the sweep instead of all taking the same
-- oldest rows; a swept row is due again only after the sweep's idle time.
ALTER TABLE image_records ADD COLUMN swept_at timestamptz NULL;
