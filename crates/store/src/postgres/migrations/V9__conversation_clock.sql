-- A conversation remembers its last event's time, so no event is stamped
-- earlier than the one before it when node clocks differ. Each
-- conversation starts from its latest stored time.
ALTER TABLE conversations ADD COLUMN last_ts_ms bigint NOT NULL DEFAULT 0;
UPDATE conversations c SET last_ts_ms = m.latest
FROM (SELECT conversation_id, max(created_ms) AS latest FROM messages GROUP BY conversation_id) m
WHERE m.conversation_id = c.id;
