-- imfree relay schema, PostgreSQL flavour. Keep it equivalent to migrations/sqlite/0001_initial.sql.
-- Times are Unix milliseconds (BIGINT). Public keys, secrets and payloads are BYTEA. Unqualified names: the pool's
-- search_path picks the schema.

CREATE TABLE users (
    id             BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           TEXT    NOT NULL UNIQUE,
    password_hash  TEXT    NOT NULL,
    disabled       BOOLEAN NOT NULL DEFAULT FALSE,
    totp_secret    BYTEA,
    totp_pending   BYTEA,
    totp_last_step BIGINT,
    failed_logins  BIGINT  NOT NULL DEFAULT 0,
    locked_until   BIGINT,
    created_at     BIGINT  NOT NULL
);

CREATE TABLE devices (
    id          TEXT   PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users (id),
    signing_key BYTEA  NOT NULL,
    static_key  BYTEA  NOT NULL UNIQUE,
    name        TEXT   NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX devices_by_user ON devices (user_id, created_at);

CREATE TABLE sessions (
    token_hash BYTEA  PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users (id),
    -- No foreign key to devices: a session names the device it was issued to, but the relay owns that relationship.
    device_id  TEXT   NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id);

-- Envelope rows outlive their payloads: once every queue entry is acknowledged the payload is cleared, and the row
-- stays only so that a re-sent id is recognised as a duplicate until prune_envelopes removes it.
CREATE TABLE envelopes (
    id            TEXT     PRIMARY KEY,
    kind          SMALLINT NOT NULL,
    sender        TEXT     NOT NULL,
    sender_device TEXT     NOT NULL,
    recipient     TEXT     NOT NULL,
    mime          TEXT     NOT NULL,
    payload       BYTEA    NOT NULL,
    created_at    BIGINT   NOT NULL
);
CREATE INDEX envelopes_by_time ON envelopes (created_at);

CREATE TABLE queue (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- No foreign key to devices: one enqueue call is the group commit of many senders, and one stale device id must
    -- not fail all of them.
    device_id   TEXT   NOT NULL,
    envelope_id TEXT   NOT NULL REFERENCES envelopes (id),
    -- Envelope first: this index also answers "does any queue still hold this envelope?" (ack, prune).
    UNIQUE (envelope_id, device_id)
);
CREATE INDEX queue_by_device ON queue (device_id, seq);

-- Stored once per pair, normalised so that a < b (or a = b); both directions are answered by the two indexes.
CREATE TABLE contacts (
    a BIGINT NOT NULL REFERENCES users (id),
    b BIGINT NOT NULL REFERENCES users (id),
    PRIMARY KEY (a, b),
    CHECK (a <= b)
);
CREATE INDEX contacts_by_b ON contacts (b, a);

CREATE TABLE presence (
    user_id   BIGINT PRIMARY KEY REFERENCES users (id),
    -- NULL until the user picks one; read as 'online'.
    status    TEXT,
    last_seen BIGINT
);
