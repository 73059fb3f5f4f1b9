-- imagery 0011: long operator work (`imagery-admin`), queued as rows the processor runs.
-- A processor claims a job with FOR UPDATE SKIP LOCKED and keeps `heartbeat_at` fresh while
-- it works; a job whose heartbeat is older than the claim lifetime (its processor died) is
-- claimed again and resumes, since every kind of job is written to be safe to run again.
-- `total` and `done_count` are what `imagery-admin` shows as its progress bar.
CREATE TABLE admin_jobs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind         text COLLATE "C" NOT NULL CHECK (kind IN ('purge_project')),
    target       text COLLATE "C" NOT NULL,
    state        text COLLATE "C" NOT NULL DEFAULT 'queued'
                 CHECK (state IN ('queued', 'running', 'done', 'failed')),
    total        bigint      NULL CHECK (total IS NULL OR total >= 0),
    done_count   bigint      NOT NULL DEFAULT 0 CHECK (done_count >= 0),
    requested_by text        NOT NULL,
    error        text        NULL,
    claim        uuid        NULL,  -- new at every claim: a processor that lost it stops
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz NULL,
    heartbeat_at timestamptz NULL,
    finished_at  timestamptz NULL
);

-- At most one unfinished job per kind and target; the claim scans only unfinished ones.
CREATE UNIQUE INDEX admin_jobs_unfinished_idx ON admin_jobs (kind, target)
    WHERE state IN ('queued', 'running');
CREATE INDEX admin_jobs_created_at_idx ON admin_jobs (created_at)
    WHERE state IN ('queued', 'running');
