-- Events as received. `dedupe_key` is the replay defence: Toggl signs no timestamp, so a
-- captured delivery can be re-sent at any time and only the unique key stops it running twice.
-- AUTOINCREMENT so row ids are never reused after pruning (callers page with `after_id`).
CREATE TABLE events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    dedupe_key      TEXT    NOT NULL UNIQUE,
    event_id        INTEGER NOT NULL,
    subscription_id INTEGER,
    workspace_id    INTEGER,
    entity          TEXT    NOT NULL,
    action          TEXT    NOT NULL,
    trigger_name    TEXT    NOT NULL,
    entity_id       INTEGER,
    received_at     INTEGER NOT NULL, -- unix microseconds, UTC
    envelope        TEXT    NOT NULL,
    source          TEXT    NOT NULL CHECK (source IN ('webhook', 'poll', 'catchup', 'replay'))
);
CREATE INDEX events_trigger_received ON events (trigger_name, received_at);
CREATE INDEX events_received ON events (received_at);

CREATE TABLE entity_state (
    entity    TEXT    NOT NULL,
    entity_id INTEGER NOT NULL,
    state     TEXT    NOT NULL,
    at        INTEGER NOT NULL,
    PRIMARY KEY (entity, entity_id)
) WITHOUT ROWID;

CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    event_row_id     INTEGER NOT NULL REFERENCES events (id),
    rule             TEXT    NOT NULL,
    step_index       INTEGER NOT NULL,
    step_name        TEXT    NOT NULL,
    payload          TEXT    NOT NULL,
    status           TEXT    NOT NULL
                     CHECK (status IN ('pending', 'running', 'succeeded', 'dead', 'cancelled')),
    priority         INTEGER NOT NULL,
    not_before       INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    sent_fingerprint TEXT,
    sent_at          INTEGER,
    result           TEXT,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    finished_at      INTEGER
);
CREATE INDEX jobs_claimable ON jobs (priority, not_before, id) WHERE status IN ('pending', 'running');
CREATE INDEX jobs_event_rule ON jobs (event_row_id, rule, step_index);
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE job_attempts (
    id          INTEGER PRIMARY KEY,
    job_id      INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    request     TEXT,
    status      INTEGER,
    error       TEXT,
    outcome     TEXT    NOT NULL CHECK (outcome IN ('ok', 'retry', 'dead', 'waiting_quota'))
);
CREATE INDEX job_attempts_job ON job_attempts (job_id, id);

CREATE TABLE subscriptions (
    workspace_id    INTEGER NOT NULL,
    subscription_id INTEGER NOT NULL,
    url_callback    TEXT    NOT NULL,
    secret          TEXT    NOT NULL,
    previous_secret TEXT,
    event_filters   TEXT    NOT NULL,
    enabled         INTEGER NOT NULL,
    validated       INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, subscription_id)
);

CREATE TABLE checkpoints (
    key        TEXT    PRIMARY KEY,
    value      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE leader_leases (
    name       TEXT    PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
);
