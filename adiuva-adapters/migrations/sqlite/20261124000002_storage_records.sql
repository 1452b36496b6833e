-- Metadata of client-encrypted cloud records; the bytes live in the blob store.
CREATE TABLE storage_records (
    id          TEXT PRIMARY KEY NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    table_name  TEXT NOT NULL,
    blob_key    TEXT NOT NULL UNIQUE,
    checksum    TEXT NOT NULL,
    size_bytes  INTEGER NOT NULL CHECK (size_bytes >= 0),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX storage_records_user_created ON storage_records (user_id, created_at DESC, id DESC);
CREATE INDEX storage_records_user_table ON storage_records (user_id, table_name, created_at DESC);
