-- Events as received. `dedupe_key` is the replay defence: Toggl signs no timestamp, so a
-- captured delivery can be re-sent at any time and only the unique key stops it running twice.
-- `envelope` is TEXT, not JSONB: it must stay byte-for-byte what was received.
CREATE TABLE events (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dedupe_key      TEXT        NOT NULL UNIQUE,
    event_id        BIGINT      NOT NULL,
    subscription_id BIGINT,
    workspace_id    BIGINT,
    entity          TEXT        NOT NULL,
    action          TEXT        NOT NULL,
    trigger_name    TEXT        NOT NULL,
    entity_id       BIGINT,
    received_at     TIMESTAMPTZ NOT NULL,
    envelope        TEXT        NOT NULL,
    source          TEXT        NOT NULL CHECK (source IN ('webhook', 'poll', 'catchup', 'replay'))
);
CREATE INDEX events_trigger_received ON events (trigger_name, received_at);
CREATE INDEX events_received ON events (received_at);

CREATE TABLE entity_state (
    entity    TEXT        NOT NULL,
    entity_id BIGINT      NOT NULL,
    state     JSONB       NOT NULL,
    at        TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (entity, entity_id)
);

CREATE TABLE jobs (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_row_id     BIGINT      NOT NULL REFERENCES events (id),
    rule             TEXT        NOT NULL,
    step_index       INTEGER     NOT NULL,
    step_name        TEXT        NOT NULL,
    payload          JSONB       NOT NULL,
    status           TEXT        NOT NULL
                     CHECK (status IN ('pending', 'running', 'succeeded', 'dead', 'cancelled')),
    priority         INTEGER     NOT NULL,
    not_before       TIMESTAMPTZ NOT NULL,
    attempts         INTEGER     NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires_at TIMESTAMPTZ,
    sent_fingerprint TEXT,
    sent_at          TIMESTAMPTZ,
    result           JSONB,
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    finished_at      TIMESTAMPTZ
);
CREATE INDEX jobs_claimable ON jobs (priority, not_before, id) WHERE status IN ('pending', 'running');
CREATE INDEX jobs_event_rule ON jobs (event_row_id, rule, step_index);
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE job_attempts (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      BIGINT      NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     INTEGER     NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL,
    request     TEXT,
    status      INTEGER,
    error       TEXT,
    outcome     TEXT        NOT NULL CHECK (outcome IN ('ok', 'retry', 'dead', 'waiting_quota'))
);
CREATE INDEX job_attempts_job ON job_attempts (job_id, id);

CREATE TABLE subscriptions (
    workspace_id    BIGINT      NOT NULL,
    subscription_id BIGINT      NOT NULL,
    url_callback    TEXT        NOT NULL,
    secret          TEXT        NOT NULL,
    previous_secret TEXT,
    event_filters   JSONB       NOT NULL,
    enabled         BOOLEAN     NOT NULL,
    validated       BOOLEAN     NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (workspace_id, subscription_id)
);

CREATE TABLE checkpoints (
    key        TEXT        PRIMARY KEY,
    value      TEXT        NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE leader_leases (
    name       TEXT        PRIMARY KEY,
    holder     TEXT        NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
