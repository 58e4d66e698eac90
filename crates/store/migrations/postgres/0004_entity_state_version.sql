-- A version per entity state, so that an instance can derive an event from the state it keeps in
-- memory and have the write itself check that the row is still that version (one round trip per
-- batch instead of two). Versions come from one sequence, not a per-row counter: a row deleted
-- and written again never repeats a version some instance may remember.
CREATE SEQUENCE entity_state_version;
ALTER TABLE entity_state
    ADD COLUMN version BIGINT NOT NULL DEFAULT nextval('entity_state_version');
