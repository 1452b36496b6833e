-- Accounting of cloud vector items: one row per (user, item) with its stored bytes, which
-- count against the same quota as records. The vectors live in the vector index.
CREATE TABLE vector_items (
    user_id     UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    item_id     TEXT NOT NULL,
    size_bytes  BIGINT NOT NULL CHECK (size_bytes >= 0),
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (user_id, item_id)
);

-- The embedded vector index's persistence (when it runs on PostgreSQL): unit-length f32
-- vectors (little-endian) and opaque payloads, per namespace.
CREATE TABLE embedded_vectors (
    namespace   TEXT NOT NULL,
    id          TEXT NOT NULL,
    dim         INTEGER NOT NULL CHECK (dim > 0),
    vector      BYTEA NOT NULL,
    payload     BYTEA NOT NULL,
    PRIMARY KEY (namespace, id)
);
