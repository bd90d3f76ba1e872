-- Operators suspend accounts and invite registrations. An invite is kept
-- once used, naming who used it.
ALTER TABLE accounts ADD COLUMN suspended boolean NOT NULL DEFAULT false;
CREATE TABLE invites (
    code_hash  bytea PRIMARY KEY,
    created_ms bigint NOT NULL,
    expires_ms bigint NOT NULL,
    used_by    bigint REFERENCES accounts(id)
);
