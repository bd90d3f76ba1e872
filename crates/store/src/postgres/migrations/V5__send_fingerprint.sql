-- A send remembers what it asked for (rules::fingerprint), so that a
-- client_msg_id reused for another message is refused rather than answered
-- as a retry. Earlier rows have none and match any retry.
ALTER TABLE messages ADD COLUMN fingerprint bigint;
