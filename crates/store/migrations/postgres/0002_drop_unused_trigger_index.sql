-- `events_trigger_received` was never used: `trigger_name` holds every trigger of an event,
-- space-separated, and listing by trigger matches a word inside it, which no b-tree index can
-- serve. Every insert still paid for it (one more b-tree page to write per event).
DROP INDEX events_trigger_received;
