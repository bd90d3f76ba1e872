-- missive on PostgreSQL, version 3: per-device positions instead of
-- per-recipient queues (issue 15), as SQLite's version 5. A message is one
-- row keyed by (conversation, seq) that also carries its dedup key; what
-- waits for a device is every event above its position; receipts are
-- cursors on members. Nothing is written per recipient, so the `devices`
-- rows no longer order anything (V1's comment on them is history). The
-- queue, receipts and dedup tables go.

-- ── messages ────────────────────────────────────────────────────────────
-- A purged body (retention, store-and-forward) is NULL; the row stays while
-- its client_msg_id must still deduplicate retries.
ALTER TABLE messages ALTER COLUMN body DROP NOT NULL;

-- Bodies the old sweep deleted still had their dedup record: keep the key
-- as a purged row, so a retry within the window is still recognised. The
-- kind is not recorded there; text is what nearly all of them were. A
-- revoked device's keys can no longer be used and are not kept.
INSERT INTO messages (id, conversation_id, seq, sender_account, sender_device, client_msg_id,
                      kind, body, created_ms)
SELECT k.message_id, k.conversation_id, k.seq, d.account_id, k.device_id, k.client_msg_id,
       0, NULL, k.created_ms
FROM dedup k JOIN devices d ON d.id = k.device_id
WHERE k.seq > 0
  AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = k.message_id)
  AND NOT EXISTS (SELECT 1 FROM messages m
                  WHERE m.conversation_id = k.conversation_id AND m.seq = k.seq);

-- Until now a device could store one client_msg_id twice once the first
-- dedup record had aged out. Both messages stay; the older ones' keys get
-- a suffix no client can send (a space is not a valid client_msg_id
-- character), so the newest keeps deduplicating.
UPDATE messages m SET client_msg_id = m.client_msg_id || ' ' || m.id
WHERE m.client_msg_id <> ''
  AND EXISTS (SELECT 1 FROM messages n
              WHERE n.sender_device = m.sender_device AND n.client_msg_id = m.client_msg_id
                AND (n.created_ms, n.id) > (m.created_ms, m.id));

-- Keyed by (conversation, seq): every read walks a conversation by seq.
ALTER TABLE messages DROP CONSTRAINT messages_pkey;
ALTER TABLE messages DROP CONSTRAINT messages_conversation_id_seq_key;
ALTER TABLE messages ADD PRIMARY KEY (conversation_id, seq);
ALTER TABLE messages ADD CONSTRAINT messages_id_key UNIQUE (id);
-- The idempotency key. System events carry no client_msg_id ('') and
-- are not deduplicated.
CREATE UNIQUE INDEX messages_by_client_id ON messages (sender_device, client_msg_id)
    WHERE client_msg_id <> '';
-- The sweep's two walks by age: bodies to purge (every row starts here, so
-- a send writes one age entry, as before), and purged rows to delete once
-- the dedup window has passed (entered only when a body is purged). One
-- index over both would make the second walk step over every retained body.
DROP INDEX messages_by_age;
CREATE INDEX messages_by_age ON messages (created_ms) WHERE body IS NOT NULL;
CREATE INDEX messages_purged_by_age ON messages (created_ms) WHERE body IS NULL;

-- What hung off bodies the old sweep deleted, or off the kept keys.
DELETE FROM reactions r WHERE NOT EXISTS (
    SELECT 1 FROM messages m WHERE m.id = r.message_id AND m.body IS NOT NULL);
DELETE FROM message_media t WHERE NOT EXISTS (
    SELECT 1 FROM messages m WHERE m.id = t.message_id AND m.body IS NOT NULL);

-- ── receipt cursors ─────────────────────────────────────────────────────
-- delivered_seq: some device of the member acked up to here.
ALTER TABLE members ADD COLUMN delivered_seq bigint NOT NULL DEFAULT 0,
                    ADD COLUMN delivered_ms  bigint NOT NULL DEFAULT 0;
UPDATE members mb SET delivered_seq = r.seq, delivered_ms = r.delivered_ms
FROM (SELECT g.conversation_id, r.account_id, max(g.seq) AS seq,
             max(r.delivered_ms) AS delivered_ms
      FROM receipts r JOIN messages g ON g.id = r.message_id
      GROUP BY g.conversation_id, r.account_id) r
WHERE mb.conversation_id = r.conversation_id AND mb.account_id = r.account_id;

-- ── departures ──────────────────────────────────────────────────────────
-- Who left or was removed: their devices still get events up to the one
-- recording it (left_seq), nothing later, and may ack up to it. Deleted
-- when the account is added again, or by the sweep after the offline TTL.
CREATE TABLE departures (
    conversation_id bigint NOT NULL,
    account_id      bigint NOT NULL,
    joined_seq      bigint NOT NULL,
    left_seq        bigint NOT NULL,
    left_ms         bigint NOT NULL,
    PRIMARY KEY (conversation_id, account_id)
);
CREATE INDEX departures_by_account ON departures (account_id);

-- Someone removed from a group still had its removal (and what came
-- before it) queued: that becomes a departure at the last queued event.
-- joined_seq is not recorded anywhere else; 0 lets them have every event
-- that was queued for them (the positions below keep out the rest).
INSERT INTO departures (conversation_id, account_id, joined_seq, left_seq, left_ms)
SELECT q.conversation_id, d.account_id, 0, max(q.seq), max(q.created_ms)
FROM queue q JOIN devices d ON d.id = q.device_id
WHERE q.kind = 0
  AND NOT EXISTS (SELECT 1 FROM members mb
                  WHERE mb.conversation_id = q.conversation_id AND mb.account_id = d.account_id)
GROUP BY q.conversation_id, d.account_id;

-- ── positions ───────────────────────────────────────────────────────────
-- A device's delivered position per conversation: what it acked,
-- cumulatively. Effective position = max(seq, the account's joined_seq);
-- no row counts as 0.
CREATE TABLE positions (
    device_id       bigint NOT NULL,
    conversation_id bigint NOT NULL,
    seq             bigint NOT NULL,
    PRIMARY KEY (device_id, conversation_id)
);

-- Where the old queues stood: just below the first queued message, or at
-- the conversation's end (a departure's end) when nothing was queued.
INSERT INTO positions (device_id, conversation_id, seq)
SELECT d.id, x.conversation_id,
       COALESCE((SELECT min(q.seq) - 1 FROM queue q
                 WHERE q.device_id = d.id AND q.conversation_id = x.conversation_id
                   AND q.kind = 0),
                x.end_seq)
FROM devices d
JOIN (SELECT mb.account_id, mb.conversation_id, c.last_seq AS end_seq
      FROM members mb JOIN conversations c ON c.id = mb.conversation_id
      UNION ALL
      SELECT account_id, conversation_id, left_seq FROM departures) x
  ON x.account_id = d.account_id;

DROP TABLE queue;
DROP TABLE receipts;
DROP TABLE dedup;
