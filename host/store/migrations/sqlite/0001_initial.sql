-- imfree relay schema, SQLite flavour. Keep it equivalent to migrations/postgres/0001_initial.sql.
-- Times are Unix milliseconds (INTEGER). Public keys, secrets and payloads are BLOBs.

CREATE TABLE users (
    -- AUTOINCREMENT: an id is never handed out twice, even if the newest account were ever deleted.
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    name           TEXT    NOT NULL UNIQUE,
    password_hash  TEXT    NOT NULL,
    disabled       INTEGER NOT NULL DEFAULT 0,
    totp_secret    BLOB,
    totp_pending   BLOB,
    totp_last_step INTEGER,
    failed_logins  INTEGER NOT NULL DEFAULT 0,
    locked_until   INTEGER,
    created_at     INTEGER NOT NULL
);

CREATE TABLE devices (
    id          TEXT    PRIMARY KEY NOT NULL,
    user_id     INTEGER NOT NULL REFERENCES users (id),
    signing_key BLOB    NOT NULL,
    static_key  BLOB    NOT NULL UNIQUE,
    name        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX devices_by_user ON devices (user_id, created_at);

CREATE TABLE sessions (
    token_hash BLOB    PRIMARY KEY NOT NULL,
    user_id    INTEGER NOT NULL REFERENCES users (id),
    -- No foreign key to devices: a session names the device it was issued to, but the relay owns that relationship.
    device_id  TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_by_user ON sessions (user_id);

-- Envelope rows outlive their payloads: once every queue entry is acknowledged the payload is cleared, and the row
-- stays only so that a re-sent id is recognised as a duplicate until prune_envelopes removes it.
CREATE TABLE envelopes (
    id            TEXT    PRIMARY KEY NOT NULL,
    kind          INTEGER NOT NULL,
    sender        TEXT    NOT NULL,
    sender_device TEXT    NOT NULL,
    recipient     TEXT    NOT NULL,
    mime          TEXT    NOT NULL,
    payload       BLOB    NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE INDEX envelopes_by_time ON envelopes (created_at);

CREATE TABLE queue (
    -- AUTOINCREMENT, not a plain rowid: a plain rowid restarts below old values once the table empties, and a device
    -- whose cursor is past that point would never fetch the new entries.
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    -- No foreign key to devices: one enqueue call is the group commit of many senders, and one stale device id must
    -- not fail all of them.
    device_id   TEXT    NOT NULL,
    envelope_id TEXT    NOT NULL REFERENCES envelopes (id),
    -- Envelope first: this index also answers "does any queue still hold this envelope?" (ack, prune).
    UNIQUE (envelope_id, device_id)
);
CREATE INDEX queue_by_device ON queue (device_id, seq);

-- Stored once per pair, normalised so that a < b (or a = b); both directions are answered by the two indexes.
CREATE TABLE contacts (
    a INTEGER NOT NULL REFERENCES users (id),
    b INTEGER NOT NULL REFERENCES users (id),
    PRIMARY KEY (a, b),
    CHECK (a <= b)
) WITHOUT ROWID;
CREATE INDEX contacts_by_b ON contacts (b, a);

CREATE TABLE presence (
    user_id   INTEGER PRIMARY KEY NOT NULL REFERENCES users (id),
    -- NULL until the user picks one; read as 'online'.
    status    TEXT,
    last_seen INTEGER
);
