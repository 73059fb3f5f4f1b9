-- Retention of the audit trail without letting the processor delete audit events at will:
-- it may only call this function, which runs as the schema's owner and never deletes an
-- event younger than 30 days, whatever it is asked (RETENTION_AUDIT_DAYS is at least 30).
-- One batch, oldest first, through audit_events' index on `at`; returns the rows deleted.
CREATE OR REPLACE FUNCTION prune_audit_events(retention_days integer, batch integer)
RETURNS integer
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    WITH gone AS (
        DELETE FROM public.audit_events
         WHERE id = ANY(ARRAY(
            SELECT id FROM public.audit_events
             WHERE at < now() - make_interval(days => greatest(retention_days, 30))
             ORDER BY at
             LIMIT batch))
        RETURNING 1)
    SELECT count(*)::integer FROM gone
$$;

REVOKE ALL ON FUNCTION prune_audit_events(integer, integer) FROM PUBLIC;
