-- Metadata of client-encrypted backups; the bytes live in the blob store under {user_id}/{timestamp}.
CREATE TABLE backups (
    id          UUID PRIMARY KEY,
    user_id     UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    blob_key    TEXT NOT NULL UNIQUE,
    version     BIGINT NOT NULL,
    timestamp   BIGINT NOT NULL,
    checksum    TEXT NOT NULL,
    size_bytes  BIGINT NOT NULL CHECK (size_bytes >= 0),
    created_at  BIGINT NOT NULL,
    UNIQUE (user_id, timestamp)
);
CREATE INDEX backups_user_timestamp ON backups (user_id, timestamp DESC);
