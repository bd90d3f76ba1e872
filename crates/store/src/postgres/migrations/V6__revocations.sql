-- Revocations are numbered, so every node, and the server an operator's
-- `missive admin` did not talk to, hear of them.
CREATE TABLE revocations (
    id        bigserial PRIMARY KEY,
    device_id bigint NOT NULL
);
