-- A reaction names its message's conversation, the column messages are
-- sharded by (docs/CLUSTER.md), so every statement on reactions can route
-- to one shard. A reaction whose message is gone goes with it.
ALTER TABLE reactions ADD COLUMN conversation_id bigint;
UPDATE reactions r SET conversation_id = m.conversation_id FROM messages m WHERE m.id = r.message_id;
DELETE FROM reactions WHERE conversation_id IS NULL;
ALTER TABLE reactions ALTER COLUMN conversation_id SET NOT NULL;
ALTER TABLE reactions DROP CONSTRAINT reactions_pkey;
ALTER TABLE reactions ADD PRIMARY KEY (conversation_id, message_id, account_id);
