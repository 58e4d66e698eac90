-- An entity state is nearly always the `payload` of the event that last wrote it, byte for byte,
-- and that event's envelope is stored in the same transaction. Writing the text a second time
-- made `entity_state` the table that dirtied most pages per commit: a ~1 KiB row per entity,
-- on a page of its own for each event of a batch. So a state may now be a reference instead:
-- `event_row_id` and the byte range (`state_start`, `state_len`) of the text inside that
-- event's `envelope`. `state` holds the text only when it is not part of the envelope (states
-- rebuilt from a parsed value, and every state written before this migration). Exactly one of
-- the two forms is set. Pruning an event first copies the text of the states that refer to it
-- into `state` (see `prune` in src/sqlite.rs).
CREATE TABLE entity_state_v3 (
    entity       TEXT    NOT NULL,
    entity_id    INTEGER NOT NULL,
    state        TEXT,
    event_row_id INTEGER,
    state_start  INTEGER,
    state_len    INTEGER,
    at           INTEGER NOT NULL,
    PRIMARY KEY (entity, entity_id),
    CHECK (
        (state IS NOT NULL AND event_row_id IS NULL AND state_start IS NULL AND state_len IS NULL)
        OR (state IS NULL AND event_row_id IS NOT NULL AND state_start >= 0 AND state_len > 0)
    )
) WITHOUT ROWID;
INSERT INTO entity_state_v3 (entity, entity_id, state, at)
    SELECT entity, entity_id, state, at FROM entity_state;
DROP TABLE entity_state;
ALTER TABLE entity_state_v3 RENAME TO entity_state;
