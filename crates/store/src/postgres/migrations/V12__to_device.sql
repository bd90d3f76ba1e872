-- To-device messages (issue 22), as SQLite's version 15: Olm-encrypted key
-- shares for one device each, waiting until it acks them. seq is drawn
-- while the recipient's device row is locked, so one device's seqs
-- increase in commit order; CACHE 1 keeps a later draw from returning a
-- smaller number.
CREATE TABLE to_device (
    seq            bigint GENERATED ALWAYS AS IDENTITY (CACHE 1) PRIMARY KEY,
    device_id      bigint NOT NULL,
    sender_account bigint NOT NULL,
    sender_device  bigint NOT NULL,
    body           text NOT NULL,
    created_ms     bigint NOT NULL
);
CREATE INDEX to_device_by_device ON to_device (device_id, seq);
