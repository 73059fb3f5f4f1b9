-- imagery 0026: image events through an outbox (issue 19). Every change a subscriber cares
-- about writes its event in the transaction that makes the change, whoever makes it (the
-- processor, DeleteImage, a project purge, retention, a takedown): triggers, so no writer can
-- forget one. The processor's relay publishes unpublished rows to SNS and then marks them;
-- a relay that dies in between publishes them again (at least once).
-- SNS does not keep order: each record counts its events (`event_sequence`), and every
-- event carries the count, so a consumer keeps the highest sequence it has seen per image.
-- A constant default is kept in the catalog: no row is rewritten.
ALTER TABLE image_records ADD COLUMN event_sequence integer NOT NULL DEFAULT 0;

CREATE TABLE event_outbox (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type          text        COLLATE "C" NOT NULL,
    project_id    text        COLLATE "C" NOT NULL,
    image_id      text        COLLATE "C" NOT NULL,
    sequence      integer     NOT NULL,
    trace_context text        NULL,
    payload       jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz NULL
);
-- What the relay reads: unpublished rows, oldest first (and nothing else is in the index).
CREATE INDEX event_outbox_unpublished_idx ON event_outbox (id) WHERE published_at IS NULL;
-- Retention: rows past their days, oldest first.
CREATE INDEX event_outbox_created_at_idx ON event_outbox (created_at);
REVOKE ALL ON event_outbox FROM PUBLIC;

-- The event's body: what GetImage shows of the record at the change, in the names of the
-- API's Image message (never a URL), with its content's placeholder and colours when it has
-- any. Runs as the schema's owner, so the services' roles need no grant on the outbox to
-- make a change that writes one.
CREATE FUNCTION image_event(kind text, r public.image_records, status text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    INSERT INTO public.event_outbox (type, project_id, image_id, sequence, trace_context, payload)
    VALUES (kind, r.project_id, r.id, r.event_sequence, r.trace_context,
            jsonb_build_object(
                'status', status,
                'failure_reason', r.failure_reason,
                'content_type', r.content_type,
                'file_name', r.file_name,
                'format', r.detected_format,
                'width', r.width,
                'height', r.height,
                'size_bytes', r.size_bytes,
                'labels', r.labels,
                'created_at', r.created_at,
                'placeholder', (
                    SELECT jsonb_build_object(
                               'thumbhash', translate(encode(b.thumbhash, 'base64'), E'\n', ''),
                               'blurhash', b.blurhash)
                      FROM public.image_blobs b
                     WHERE b.sha256 = r.sha256 AND b.thumbhash IS NOT NULL),
                'average_color', (SELECT b.average_color FROM public.image_blobs b
                                   WHERE b.sha256 = r.sha256),
                'dominant_colors', COALESCE((SELECT b.dominant_colors FROM public.image_blobs b
                                              WHERE b.sha256 = r.sha256), '[]'::jsonb)));
END
$$;
REVOKE ALL ON FUNCTION image_event(text, public.image_records, text) FROM PUBLIC;

-- A record turning READY, FAILED or BLOCKED: its count goes up and its event is written.
-- BEFORE, so the count is part of the row the statement writes.
CREATE FUNCTION image_records_status_event() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    NEW.event_sequence := OLD.event_sequence + 1;
    PERFORM public.image_event('image.' || NEW.status, NEW, upper(NEW.status));
    RETURN NEW;
END
$$;
CREATE TRIGGER image_records_status_event
    BEFORE UPDATE OF status ON image_records
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND NEW.status IN ('ready', 'failed', 'blocked'))
    EXECUTE FUNCTION image_records_status_event();

-- A record deleted (DeleteImage, a project purge, retention of a FAILED record): one more
-- than its last count.
CREATE FUNCTION image_records_delete_event() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    gone public.image_records := OLD;
BEGIN
    gone.event_sequence := OLD.event_sequence + 1;
    PERFORM public.image_event('image.deleted', gone, 'DELETED');
    RETURN NULL;
END
$$;
CREATE TRIGGER image_records_delete_event
    AFTER DELETE ON image_records
    FOR EACH ROW
    EXECUTE FUNCTION image_records_delete_event();
