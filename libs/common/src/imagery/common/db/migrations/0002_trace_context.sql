-- imagery 0002: the W3C traceparent of the CreateUploadUrl call, so the processor's span for
-- the image links back to it (one trace query shows request -> upload -> processing).
ALTER TABLE image_records ADD COLUMN trace_context text NULL;
