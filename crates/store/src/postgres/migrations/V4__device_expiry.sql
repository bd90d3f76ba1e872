-- Devices unused for a while expire: the sweeper finds them by when they
-- were last seen.
CREATE INDEX devices_by_last_seen ON devices (last_seen_ms);
