-- imagery 0001: image records and content blobs (DESIGN.md §3).
-- No triggers: every UPDATE sets updated_at = now() itself.

CREATE TABLE image_blobs (
    sha256          text        PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    format          text        NOT NULL,
    width           integer     NOT NULL CHECK (width > 0),
    height          integer     NOT NULL CHECK (height > 0),
    size_bytes      bigint      NOT NULL CHECK (size_bytes > 0),
    reference_count integer     NOT NULL DEFAULT 0 CHECK (reference_count >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- The renditions that exist for a blob: one row per (preset, encoding).
CREATE TABLE image_variants (
    sha256       text    NOT NULL REFERENCES image_blobs (sha256) ON DELETE CASCADE,
    name         text    NOT NULL,
    format       text    NOT NULL CHECK (format IN ('webp', 'jpeg', 'png', 'avif')),
    content_type text    NOT NULL,
    width        integer NOT NULL CHECK (width > 0),
    height       integer NOT NULL CHECK (height > 0),
    size_bytes   bigint  NOT NULL CHECK (size_bytes > 0),
    object_key   text    NOT NULL UNIQUE CHECK (object_key LIKE 'variants/%'),
    PRIMARY KEY (sha256, name, format)
);

CREATE TABLE image_records (
    id              text        PRIMARY KEY CHECK (id ~ '^[0-7][0-9A-HJKMNP-TV-Z]{25}$'),
    status          text        NOT NULL
                                CHECK (status IN ('pending', 'processing', 'ready', 'failed')),
    content_type    text        NOT NULL,
    file_name       text        NOT NULL CHECK (char_length(file_name) BETWEEN 1 AND 255),
    size_bytes      bigint      NULL CHECK (size_bytes IS NULL OR size_bytes >= 0),
    object_key      text        NOT NULL UNIQUE,
    width           integer     NULL CHECK (width IS NULL OR width > 0),
    height          integer     NULL CHECK (height IS NULL OR height > 0),
    sha256          text        NULL REFERENCES image_blobs (sha256),
    detected_format text        NULL,
    failure_reason  text        NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT failed_has_reason CHECK ((status = 'failed') = (failure_reason IS NOT NULL))
);

-- The processor's recovery scan: records not yet terminal, oldest first.
CREATE INDEX image_records_unfinished_idx
    ON image_records (updated_at) WHERE status IN ('pending', 'processing');

-- Reference counting and blob deletion look up the records that point at a blob.
CREATE INDEX image_records_sha256_idx ON image_records (sha256) WHERE sha256 IS NOT NULL;

-- Blobs whose last reference went away, waiting for their objects to be deleted.
CREATE INDEX image_blobs_unreferenced_idx ON image_blobs (updated_at) WHERE reference_count = 0;
