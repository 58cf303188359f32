-- The content digest of each event (SHA-256 of the event without what the gateway stamps),
-- so that the same document version arriving again with other content is told from a copy.
ALTER TABLE event_history ADD COLUMN content_digest bytea;
