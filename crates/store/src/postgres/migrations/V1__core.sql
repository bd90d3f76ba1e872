-- missive on PostgreSQL, version 1: accounts, devices, conversations,
-- groups, messages, queues, receipts, reactions, contacts, blocks, media.
-- The same facts as the SQLite schema (sqlite/schema.rs, versions 1-3).
--
-- Identity columns never hand a deleted row's id to a new one (dedup keys
-- and receipts refer to them). Text that is sorted or compared for order
-- uses COLLATE "C" so every database orders it byte-wise, as SQLite does.
-- Enumerations are smallint codes, the same codes as SQLite's.

-- presence_visibility: 0 everyone, 1 contacts, 2 nobody.
CREATE TABLE accounts (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username            text COLLATE "C" NOT NULL UNIQUE,
    password_hash       text NOT NULL,
    phone               text,
    created_ms          bigint NOT NULL,
    presence_visibility smallint NOT NULL DEFAULT 0,
    last_seen_ms        bigint NOT NULL DEFAULT 0
);

-- A device row is also the lock that orders its queue: every transaction
-- that appends to a device's queue locks the row first (postgres/mod.rs).
CREATE TABLE devices (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id   bigint NOT NULL REFERENCES accounts(id),
    name         text NOT NULL,
    token_hash   bytea NOT NULL UNIQUE,
    created_ms   bigint NOT NULL,
    last_seen_ms bigint NOT NULL
);
CREATE INDEX devices_by_account ON devices(account_id);

-- kind: 0 direct, 1 group. last_seq is taken under this row's lock.
CREATE TABLE conversations (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind       smallint NOT NULL DEFAULT 0,
    name       text,
    direct_key text UNIQUE,
    last_seq   bigint NOT NULL DEFAULT 0,
    created_ms bigint NOT NULL
);

-- role: 0 member, 1 admin. A member sees events with seq > joined_seq.
CREATE TABLE members (
    conversation_id bigint NOT NULL REFERENCES conversations(id),
    account_id      bigint NOT NULL REFERENCES accounts(id),
    role            smallint NOT NULL DEFAULT 0,
    joined_seq      bigint NOT NULL DEFAULT 0,
    joined_ms       bigint NOT NULL DEFAULT 0,
    read_seq        bigint NOT NULL DEFAULT 0,
    read_ms         bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, account_id)
);
CREATE INDEX members_by_account ON members(account_id);

-- kind: 0 text, 1 system, 2 reaction, 3 edit, 4 delete. target_id: the
-- message replied to or acted on.
CREATE TABLE messages (
    id              text COLLATE "C" PRIMARY KEY,
    conversation_id bigint NOT NULL REFERENCES conversations(id),
    seq             bigint NOT NULL,
    sender_account  bigint NOT NULL,
    sender_device   bigint NOT NULL,
    client_msg_id   text NOT NULL,
    kind            smallint NOT NULL DEFAULT 0,
    body            text NOT NULL,
    target_id       text COLLATE "C",
    edited_ms       bigint,
    deleted         boolean NOT NULL DEFAULT false,
    created_ms      bigint NOT NULL,
    UNIQUE (conversation_id, seq)
);
CREATE INDEX messages_by_age ON messages(created_ms);
CREATE INDEX messages_by_target ON messages(target_id) WHERE target_id IS NOT NULL;

-- Inserted first by a send (seq filled in later in the same transaction),
-- so a concurrent retry waits on this key instead of storing twice.
CREATE TABLE dedup (
    device_id       bigint NOT NULL,
    client_msg_id   text NOT NULL,
    message_id      text COLLATE "C" NOT NULL,
    conversation_id bigint NOT NULL,
    seq             bigint NOT NULL,
    created_ms      bigint NOT NULL,
    PRIMARY KEY (device_id, client_msg_id)
);
CREATE INDEX dedup_by_age ON dedup(created_ms);

-- kind: 0 message, 1 delivered receipt, 2 read receipt.
-- pos is drawn while the device row is locked, so one device's positions
-- increase in commit order. CACHE 1 matters: a per-session cache of
-- values would let a later draw return a smaller number.
CREATE TABLE queue (
    pos             bigint GENERATED ALWAYS AS IDENTITY (CACHE 1) PRIMARY KEY,
    device_id       bigint NOT NULL,
    kind            smallint NOT NULL,
    message_id      text COLLATE "C",
    conversation_id bigint NOT NULL,
    seq             bigint NOT NULL,
    by_account      bigint NOT NULL,
    created_ms      bigint NOT NULL,
    expires_ms      bigint NOT NULL
);
CREATE INDEX queue_by_device ON queue(device_id, pos);
CREATE INDEX queue_by_message ON queue(message_id) WHERE kind = 0;
CREATE INDEX queue_by_expiry ON queue(expires_ms);

CREATE TABLE receipts (
    message_id   text COLLATE "C" NOT NULL,
    account_id   bigint NOT NULL,
    delivered_ms bigint NOT NULL,
    PRIMARY KEY (message_id, account_id)
);

CREATE TABLE reactions (
    message_id text COLLATE "C" NOT NULL,
    account_id bigint NOT NULL,
    emoji      text NOT NULL,
    updated_ms bigint NOT NULL,
    PRIMARY KEY (message_id, account_id)
);

CREATE TABLE contacts (
    owner_id   bigint NOT NULL,
    contact_id bigint NOT NULL,
    created_ms bigint NOT NULL,
    PRIMARY KEY (owner_id, contact_id)
);

CREATE TABLE blocks (
    blocker_id bigint NOT NULL,
    blocked_id bigint NOT NULL,
    created_ms bigint NOT NULL,
    PRIMARY KEY (blocker_id, blocked_id)
);
CREATE INDEX blocks_by_blocked ON blocks(blocked_id);

-- Media records; the bytes live in Blobs. width/height: pixel size of images.
CREATE TABLE media (
    id           text COLLATE "C" PRIMARY KEY,
    uploader_id  bigint NOT NULL,
    content_type text NOT NULL,
    size_bytes   bigint NOT NULL,
    sha256       text NOT NULL,
    created_ms   bigint NOT NULL,
    width        bigint,
    height       bigint,
    thumbnail    boolean NOT NULL DEFAULT false
);
CREATE INDEX media_by_age ON media(created_ms);

-- Which texts carry which media; members who saw the text may read it.
CREATE TABLE message_media (
    message_id      text COLLATE "C" NOT NULL,
    media_id        text COLLATE "C" NOT NULL,
    conversation_id bigint NOT NULL,
    seq             bigint NOT NULL,
    PRIMARY KEY (message_id, media_id)
);
CREATE INDEX message_media_by_media ON message_media(media_id);
