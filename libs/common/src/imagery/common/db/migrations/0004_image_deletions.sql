-- imagery 0004: a feed of deleted image ids, so DeliveryService can cache READY download targets
-- in process and still never answer for an image deleted before the request arrived.
-- A READY record never changes again until it is deleted (its blob is pinned by the reference
-- count), so deletion is the only event such a cache must hear about. Each request first asks
-- for deletions by transactions at or after the oldest transaction that was still running at
-- its previous check (pg_snapshot_xmin), which covers every delete committed since, whatever
-- order transactions commit in. The processor's housekeeping prunes rows after a day.
CREATE TABLE image_deletions (
    image_id   text COLLATE "C" NOT NULL,
    xid        xid8             NOT NULL DEFAULT pg_current_xact_id(),
    deleted_at timestamptz      NOT NULL DEFAULT now()
);

CREATE INDEX image_deletions_xid_idx ON image_deletions (xid);
CREATE INDEX image_deletions_deleted_at_idx ON image_deletions (deleted_at);
