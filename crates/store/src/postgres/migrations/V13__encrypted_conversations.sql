-- End-to-end encrypted conversations (issue 22), as SQLite's version 16:
-- once on, every message of the conversation is ciphertext (kind 5).
ALTER TABLE conversations ADD COLUMN encrypted boolean NOT NULL DEFAULT false;
