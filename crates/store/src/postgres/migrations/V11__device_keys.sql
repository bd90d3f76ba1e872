-- End-to-end encryption keys (issue 22), as SQLite's version 14: each
-- device's identity keys, and the one-time keys others claim, each once.
CREATE TABLE device_keys (
    device_id  bigint PRIMARY KEY,
    account_id bigint NOT NULL,
    curve25519 text NOT NULL,
    ed25519    text NOT NULL,
    created_ms bigint NOT NULL
);
CREATE INDEX device_keys_by_account ON device_keys (account_id);
CREATE TABLE one_time_keys (
    device_id bigint NOT NULL,
    key_id    text COLLATE "C" NOT NULL,
    key       text NOT NULL,
    signature text NOT NULL,
    PRIMARY KEY (device_id, key_id)
);
