-- imagery 0019: variants rendered after ingest (issue 17). A row asks the processor for one
-- preset of one content at one profile version: a lazy preset's first request (written by
-- delivery), or a backfill to the project's current version (written by the processor's
-- operator jobs). The key makes a second ask for the same rendering a no-op, and the
-- processor renders only what has no variant row when it claims the ask, so nothing is
-- rendered twice. Content that is collected takes its asks with it.
-- `claimed_at` is when a processor took the ask (NULL: nobody has); a claim older than the
-- processor's stale-claim time is taken again (its processor died). A transient failure
-- dates the claim back so that it is retaken after a backoff. `attempts` counts the claims.
-- `job_id` names the backfill job that asked (a lazy ask it repeated keeps its source), so
-- the job can count what its asks made.
CREATE TABLE render_requests (
    sha256          text        NOT NULL REFERENCES image_blobs (sha256) ON DELETE CASCADE,
    profile_version integer     NOT NULL CHECK (profile_version >= 0),
    preset          text        NOT NULL,
    project_id      text COLLATE "C" NOT NULL,
    source          text        NOT NULL CHECK (source IN ('lazy', 'backfill')),
    requested_at    timestamptz NOT NULL DEFAULT now(),
    claimed_at      timestamptz NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    job_id          bigint      NULL REFERENCES admin_jobs (id),
    PRIMARY KEY (sha256, profile_version, preset)
);
-- Lazy asks first (someone is waiting), then backfill, oldest first within each.
CREATE INDEX render_requests_due_idx ON render_requests ((source = 'backfill'), requested_at);
-- A backfill job waits for its own asks to be done.
CREATE INDEX render_requests_job_idx ON render_requests (job_id) WHERE job_id IS NOT NULL;
REVOKE ALL ON render_requests FROM PUBLIC;

-- Backfill, an operator job (`imagery-admin backfill`): it brings one project's content to
-- the project's current profile version (`version`, fixed when the job starts), walking its
-- content in address order and keeping its place (`resume_after`) so a restarted job goes on
-- from there. `made` and `failed` count the renders its asks ended in, `moved` the contents
-- it brought to `version`. `total` and `done_count` are the project's contents and those at
-- `version`.
ALTER TABLE admin_jobs
    DROP CONSTRAINT admin_jobs_kind_check,
    ADD CONSTRAINT admin_jobs_kind_check CHECK (kind IN ('purge_project', 'backfill')),
    ADD COLUMN version integer NULL,
    ADD COLUMN resume_after text NULL,
    ADD COLUMN made bigint NOT NULL DEFAULT 0,
    ADD COLUMN failed bigint NOT NULL DEFAULT 0,
    ADD COLUMN moved bigint NOT NULL DEFAULT 0;
