-- Metadata of client-encrypted backups; the bytes live in the blob store under {user_id}/{timestamp}.
CREATE TABLE backups (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    blob_key    TEXT NOT NULL UNIQUE,
    version     INTEGER NOT NULL,
    timestamp   INTEGER NOT NULL,
    checksum    TEXT NOT NULL,
    size_bytes  INTEGER NOT NULL CHECK (size_bytes >= 0),
    created_at  INTEGER NOT NULL,
    UNIQUE (user_id, timestamp)
);
CREATE INDEX backups_user_timestamp ON backups (user_id, timestamp DESC);
