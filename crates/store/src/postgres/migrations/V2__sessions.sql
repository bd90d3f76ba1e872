-- missive on PostgreSQL, version 2: the session directory (which node holds
-- which live device), as SQLite's version 4.
CREATE TABLE nodes (
    id             text PRIMARY KEY,
    lease_until_ms bigint NOT NULL
);
CREATE TABLE sessions (
    device_id  bigint PRIMARY KEY,
    account_id bigint NOT NULL,
    node_id    text NOT NULL,
    since_ms   bigint NOT NULL
);
CREATE INDEX sessions_by_account ON sessions(account_id);
CREATE INDEX sessions_by_node ON sessions(node_id);
