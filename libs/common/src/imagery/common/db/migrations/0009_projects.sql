-- imagery 0009: projects (the tenant), their credentials, and an append-only audit trail.
-- Every image belongs to one project. Existing rows join the project `default` without being
-- rewritten: a constant default is stored once in the catalog (Postgres >= 11), so this takes
-- an ACCESS EXCLUSIVE lock for a catalog update only, bounded by the runner's lock_timeout.
-- A project's content scope salts its content addresses (`tenancy.content_address`):
-- identical bytes in two projects are two contents, with two sets of objects. `default` keeps
-- the empty scope, where content is addressed by its plain SHA-256 as before, so every
-- existing image, object key and deduplication stays as it is.

CREATE TABLE projects (
    id            text COLLATE "C" PRIMARY KEY CHECK (id ~ '^[a-z][a-z0-9-]{1,61}[a-z0-9]$'),
    display_name  text        NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    settings      jsonb       NOT NULL DEFAULT '{}',
    content_scope text COLLATE "C" NOT NULL UNIQUE,
    operator      boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz NULL,
    purge_time    timestamptz NULL,
    CONSTRAINT deleted_has_purge_time CHECK ((deleted_at IS NULL) = (purge_time IS NULL))
);

INSERT INTO projects (id, display_name, content_scope)
VALUES ('default', 'Default project', '');

-- API keys: `imk_<id>_<secret>`; the id is public (it finds the row), only a hash of the whole
-- key is kept.
CREATE TABLE api_keys (
    id           text COLLATE "C" PRIMARY KEY CHECK (id ~ '^[a-z2-7]{16}$'),
    project_id   text COLLATE "C" NOT NULL REFERENCES projects (id),
    display_name text        NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    secret_hash  bytea       NOT NULL CHECK (octet_length(secret_hash) = 32),
    scopes       text[]      NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text        NOT NULL,
    expire_time  timestamptz NULL,
    revoked_at   timestamptz NULL,
    last_used_at timestamptz NULL
);
CREATE INDEX api_keys_project_id_idx ON api_keys (project_id, created_at, id);

-- mTLS client identities (SPIFFE URI SAN, else subject CN) and what they may do.
CREATE TABLE client_identities (
    identity    text COLLATE "C" PRIMARY KEY CHECK (char_length(identity) BETWEEN 1 AND 2048),
    project_id  text COLLATE "C" NOT NULL REFERENCES projects (id),
    scopes      text[]      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text        NOT NULL,
    revoked_at  timestamptz NULL
);
CREATE INDEX client_identities_project_id_idx ON client_identities (project_id, identity);

-- Who did what. Append-only: nothing updates or deletes a row (housekeeping may prune by age).
-- Never holds a secret: principals are key ids or certificate identities.
CREATE TABLE audit_events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    project_id text COLLATE "C" NULL,
    principal  text        NOT NULL,
    action     text COLLATE "C" NOT NULL,
    target     text        NOT NULL,
    trace_id   text        NULL,
    outcome    text COLLATE "C" NOT NULL,
    details    jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_project_id_idx ON audit_events (project_id, at DESC, id DESC);
CREATE INDEX audit_events_at_idx ON audit_events (at DESC, id DESC);

-- Last, so the ACCESS EXCLUSIVE lock on image_records is held for catalog changes only: no
-- statement here reads the table (a CHECK added with a column would scan every row; it is
-- added NOT VALID and validated by 0010 without blocking anyone). The default stays until the
-- release before this one (which inserts without a project) is gone everywhere: a later
-- migration drops it; this release always names the project.
ALTER TABLE image_records ADD COLUMN project_id text COLLATE "C" NOT NULL DEFAULT 'default';
-- The bytes' SHA-256 where `sha256` holds a scoped content address (NULL: they are the same).
ALTER TABLE image_records ADD COLUMN digest text COLLATE "C" NULL;
ALTER TABLE image_records ADD CONSTRAINT image_records_digest_check
    CHECK (digest IS NULL OR digest ~ '^[0-9a-f]{64}$') NOT VALID;
ALTER TABLE image_records ADD CONSTRAINT image_records_project_id_fkey
    FOREIGN KEY (project_id) REFERENCES projects (id) NOT VALID;
