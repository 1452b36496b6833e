-- Metadata of client-encrypted cloud records; the bytes live in the blob store.
CREATE TABLE storage_records (
    id          UUID PRIMARY KEY,
    user_id     UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    table_name  TEXT NOT NULL,
    blob_key    TEXT NOT NULL UNIQUE,
    checksum    TEXT NOT NULL,
    size_bytes  BIGINT NOT NULL CHECK (size_bytes >= 0),
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX storage_records_user_created ON storage_records (user_id, created_at DESC, id DESC);
CREATE INDEX storage_records_user_table ON storage_records (user_id, table_name, created_at DESC);
