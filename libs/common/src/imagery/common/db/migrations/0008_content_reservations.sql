-- imagery 0008: a reference completes the reservation that wrote the objects, never another
-- one that happens to hold the same content's row later (the row was collected and reserved
-- again in between): `reservation` is new on every insert, and a reference names it.
ALTER TABLE image_blobs ADD COLUMN reservation uuid NOT NULL DEFAULT gen_random_uuid();

-- Unreferenced rows from before 0005 may have lost objects to a deletion that failed half
-- way: they are not to be linked to, only collected.
UPDATE image_blobs SET stored_at = NULL WHERE reference_count = 0 AND collecting_since IS NULL;
