-- The entity state is read whole, by this program only, and never queried inside: keep it as
-- the JSON text it is. As JSONB, every event paid for parsing it on the server on write and
-- printing it back on read (about a tenth of the server's CPU in the ingest benchmark).
ALTER TABLE entity_state ALTER COLUMN state TYPE TEXT USING state::text;
