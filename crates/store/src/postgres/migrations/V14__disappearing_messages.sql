-- Disappearing messages (issue 22), as SQLite's version 17: a
-- conversation's timer, and each event's expiry as it was sent; the sweep
-- finds expired bodies by the partial index, which holds only events with
-- an expiry (and a body).
ALTER TABLE conversations ADD COLUMN disappear_secs bigint NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN expires_ms bigint;
CREATE INDEX messages_by_expiry ON messages (expires_ms)
    WHERE expires_ms IS NOT NULL AND body IS NOT NULL;
