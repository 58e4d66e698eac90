-- A version per entity state, so that an instance can derive an event from the state it keeps in
-- memory and have the write itself check that the row is still that version (one round trip per
-- batch instead of two). Versions come from one sequence, not a per-row counter: a row deleted
-- and written again never repeats a version some instance may remember.
CREATE SEQUENCE entity_state_version;
ALTER TABLE entity_state
    ADD COLUMN version BIGINT NOT NULL DEFAULT nextval('entity_state_version');
-- Every event rewrites its entity's row. With room left on each page, PostgreSQL can put the new
-- row version on the same page and skip the primary key's index entry (a HOT update) instead of
-- adding one per event.
ALTER TABLE entity_state SET (fillfactor = 50);
