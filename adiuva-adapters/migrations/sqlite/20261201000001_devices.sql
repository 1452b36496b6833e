-- A user's registered devices with their presence. A device has a live session while
-- session_id and instance_id are set (both or neither): the socket's session and the server
-- instance holding it. next_seq is the seq the device's next queued frame gets; taking it
-- with an UPDATE serialises enqueues of one device. INTEGER is 64-bit in SQLite.
CREATE TABLE devices (
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_id     TEXT NOT NULL,
    name          TEXT NOT NULL,
    platform      TEXT NOT NULL,
    app_version   TEXT NOT NULL,
    capabilities  TEXT NOT NULL, -- a JSON array of strings
    session_id    TEXT,
    instance_id   TEXT,
    last_seen     INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    expired_count INTEGER NOT NULL DEFAULT 0 CHECK (expired_count >= 0),
    next_seq      INTEGER NOT NULL DEFAULT 1 CHECK (next_seq >= 1),
    PRIMARY KEY (user_id, device_id),
    CHECK ((session_id IS NULL) = (instance_id IS NULL))
);
-- Heartbeats and shutdowns address the devices an instance holds.
CREATE INDEX devices_instance ON devices (instance_id);

-- Each device's durable queue of frames that must not be lost, in seq order until acked.
-- Payloads are opaque bytes (up to the frame limit, about 1 MiB): a rowid table, since
-- WITHOUT ROWID suits small rows only.
CREATE TABLE device_queue (
    user_id     TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    frame_id    TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    payload     BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id, seq),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
-- The sweeper finds expired frames by time.
CREATE INDEX device_queue_expires ON device_queue (expires_at);
