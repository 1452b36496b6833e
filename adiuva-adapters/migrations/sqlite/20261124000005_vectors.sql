-- Accounting of cloud vector items: one row per (user, item) with its stored bytes, which
-- count against the same quota as records. The vectors live in the vector index.
CREATE TABLE vector_items (
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    item_id     TEXT NOT NULL,
    size_bytes  INTEGER NOT NULL CHECK (size_bytes >= 0),
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (user_id, item_id)
) WITHOUT ROWID;

-- The embedded vector index's persistence: unit-length f32 vectors (little-endian) and
-- opaque payloads, per namespace. Loaded into memory per namespace on first use.
CREATE TABLE embedded_vectors (
    namespace   TEXT NOT NULL,
    id          TEXT NOT NULL,
    dim         INTEGER NOT NULL CHECK (dim > 0),
    vector      BLOB NOT NULL,
    payload     BLOB NOT NULL,
    PRIMARY KEY (namespace, id)
);
