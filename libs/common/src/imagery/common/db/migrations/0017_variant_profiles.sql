-- imagery 0017: variant profiles (issue 17). A profile is a project's versioned list of
-- presets. Each change inserts a new version and none is ever updated: object keys carry the
-- version, and an `immutable` key must never get other bytes. Version 0 is the deployment's
-- default (VARIANT_PRESETS) and has no row.
CREATE TABLE variant_profiles (
    project_id text COLLATE "C" NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    version    integer     NOT NULL CHECK (version > 0),
    profile    jsonb       NOT NULL,
    created_by text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, version)
);
REVOKE ALL ON variant_profiles FROM PUBLIC;

-- The project's current profile, a copy of its latest version (NULL: the default), read with
-- the project wherever it is read (authentication, the processor's record).
ALTER TABLE projects ADD COLUMN variant_profile jsonb NULL;

-- The version each content's variants were rendered with, and each variant's. Existing rows
-- are version 0 (constant defaults live in the catalog: no row is written). A backfill adds
-- the new version's variants beside the old ones, which serve until their replacements exist.
ALTER TABLE image_blobs ADD COLUMN profile_version integer NOT NULL DEFAULT 0;
ALTER TABLE image_variants ADD COLUMN profile_version integer NOT NULL DEFAULT 0;

-- A variant of a preset with a byte budget that is over it even at the preset's quality floor:
-- kept (the floor wins over the budget), and recorded so that it can be found.
ALTER TABLE image_variants ADD COLUMN over_budget boolean NOT NULL DEFAULT false;
