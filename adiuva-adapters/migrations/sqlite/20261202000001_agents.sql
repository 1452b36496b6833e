-- Agent configs: local agents (run on a device) and cloud agents (read a provider with the
-- user's OAuth token, sealed by core; opaque here). filters and output are JSON objects
-- kept as text. next_run_at is the next schedule slot (ms), NULL while not scheduled;
-- the scheduler claims a slot by a compare-and-swap of it. Booleans are 0/1 and INTEGER
-- is 64-bit in SQLite.
CREATE TABLE agents (
    id                 TEXT PRIMARY KEY NOT NULL,
    user_id            TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind               TEXT NOT NULL CHECK (kind IN ('local', 'cloud')),
    name               TEXT NOT NULL,
    agent_type         TEXT NOT NULL,
    schedule           TEXT,
    timezone           TEXT NOT NULL,
    enabled            INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    filters            TEXT NOT NULL, -- a JSON object
    output             TEXT NOT NULL, -- a JSON object
    prompt_template    TEXT NOT NULL,
    provider           TEXT,
    oauth_token_sealed TEXT,
    status             TEXT NOT NULL CHECK (status IN ('active', 'needs_reauth')),
    sync_cursor        TEXT,
    next_run_at        INTEGER,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);
-- A user's configs by kind, oldest first (and the per-user counts of the tier limits).
CREATE INDEX agents_user ON agents (user_id, kind, created_at);
-- The scheduler's tick: runnable configs by their next slot. Its WHERE is the one
-- due_agents states, so the planner can use it.
CREATE INDEX agents_due ON agents (next_run_at, id) WHERE enabled AND status = 'active';

-- Runs: one per scheduled slot (unique (agent_id, scheduled_for); manual runs have a NULL
-- slot, and NULLs are distinct, so they are not constrained), with counts and ids only,
-- never content. An active run (queued or running) is leased: past lease_until another
-- instance takes it over.
CREATE TABLE agent_runs (
    id             TEXT PRIMARY KEY NOT NULL,
    user_id        TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    agent_id       TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    status         TEXT NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'skipped', 'needs_reauth')),
    triggered_by   TEXT NOT NULL CHECK (triggered_by IN ('manual', 'schedule')),
    scheduled_for  INTEGER,
    created_at     INTEGER NOT NULL,
    started_at     INTEGER,
    finished_at    INTEGER,
    items_read     INTEGER NOT NULL DEFAULT 0,
    items_produced INTEGER NOT NULL DEFAULT 0,
    error          TEXT,
    instance_id    TEXT,
    lease_until    INTEGER,
    attempts       INTEGER NOT NULL DEFAULT 1,
    device_id      TEXT,
    UNIQUE (agent_id, scheduled_for)
);
-- A user's run history, newest first.
CREATE INDEX agent_runs_user ON agent_runs (user_id, created_at, id);
-- Take-over: active runs by lease.
CREATE INDEX agent_runs_lease ON agent_runs (lease_until) WHERE status IN ('queued', 'running');
-- Lease renewal: the active runs an instance holds.
CREATE INDEX agent_runs_instance ON agent_runs (instance_id) WHERE status IN ('queued', 'running');

-- Setup-journey sessions: the conversation is sealed by core (opaque here); gone after
-- expires_at.
CREATE TABLE agent_journeys (
    id           TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    agent_type   TEXT NOT NULL,
    state_sealed TEXT NOT NULL,
    done         INTEGER NOT NULL CHECK (done IN (0, 1)),
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);
CREATE INDEX agent_journeys_user ON agent_journeys (user_id);
-- The sweep of expired sessions.
CREATE INDEX agent_journeys_expires ON agent_journeys (expires_at);
